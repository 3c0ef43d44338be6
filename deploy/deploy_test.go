// Package deploy holds the tests of the deployment files beside it: the Kubernetes manifests
// (kubernetes/, rendered with kustomize) and the Cloud Run services (cloudrun/). Every object is
// decoded strictly into the API's own types, so a misspelt or misplaced field fails here rather
// than at kubectl apply, and the properties the service relies on are checked: probes, the
// shutdown grace against the termination grace period, the security context, the disruption
// budget, and a configuration that oci-proxy itself accepts.
package deploy

import (
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/config"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	serializerjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// drainAfterGrace is how long oci-proxy serve lets requests in flight finish after its
// --shutdown-grace (internal/app).
const drainAfterGrace = 20 * time.Second

// decoder decodes YAML into the registered API types and reports unknown and duplicate fields.
func decoder(t *testing.T) runtime.Decoder {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, policyv1.AddToScheme,
		autoscalingv2.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	return serializerjson.NewSerializerWithOptions(serializerjson.DefaultMetaFactory, scheme, scheme,
		serializerjson.SerializerOptions{Yaml: true, Strict: true})
}

// objects is a rendered kustomization, by kind and name.
type objects map[string]runtime.Object

func key(kind, name string) string { return kind + "/" + name }

func get[T runtime.Object](t *testing.T, objs objects, kind, name string) T {
	t.Helper()
	o, ok := objs[key(kind, name)]
	if !ok {
		t.Fatalf("no %s %s among %v", kind, name, objs.keys())
	}
	v, ok := o.(T)
	if !ok {
		t.Fatalf("%s %s decoded as %T", kind, name, o)
	}
	return v
}

func (o objects) keys() []string {
	var ks []string
	for k := range o {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// render runs kustomize on dir, as kubectl apply -k would, and decodes every object strictly.
func render(t *testing.T, dir string) objects {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	dec := decoder(t)
	objs := objects{}
	for _, r := range res.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, gvk, err := dec.Decode(b, nil, nil)
		if err != nil {
			t.Errorf("%s: %s %s: %v", dir, r.GetKind(), r.GetName(), err)
			continue
		}
		objs[key(gvk.Kind, r.GetName())] = obj
	}
	return objs
}

func TestStrictDecodingCatchesTypos(t *testing.T) {
	for name, doc := range map[string]string{
		"misspelt field": `
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers: [{name: x, image: x, readinessProbe: {httpGet: {path: /readyz, prot: 8080}}}]`,
		"field at the wrong level": `
apiVersion: v1
kind: Pod
metadata: {name: x}
spec:
  readOnlyRootFilesystem: true
  containers: [{name: x, image: x}]`,
		"duplicate field": `
apiVersion: v1
kind: Service
metadata: {name: x}
spec:
  type: ClusterIP
  type: NodePort`,
	} {
		if _, _, err := decoder(t).Decode([]byte(doc), nil, nil); err == nil {
			t.Errorf("%s: decoded without an error", name)
		}
	}
}

func TestKustomizationsRender(t *testing.T) {
	for dir, want := range map[string][]string{
		"kubernetes": {
			"ConfigMap/oci-proxy-config", "Deployment/oci-proxy", "Deployment/oci-proxy-sync",
			"HorizontalPodAutoscaler/oci-proxy", "Namespace/oci-proxy", "PodDisruptionBudget/oci-proxy",
			"Service/oci-proxy", "Service/oci-proxy-admin", "Service/oci-proxy-sync",
			"ServiceAccount/oci-proxy", "ServiceMonitor/oci-proxy",
		},
		"kubernetes/proxy": {
			"ConfigMap/oci-proxy-config", "Deployment/oci-proxy", "HorizontalPodAutoscaler/oci-proxy",
			"PodDisruptionBudget/oci-proxy", "Service/oci-proxy", "Service/oci-proxy-admin",
			"ServiceAccount/oci-proxy",
		},
		"kubernetes/monitoring":   {"ServiceMonitor/oci-proxy"},
		"kubernetes/sync-daemon":  {"Deployment/oci-proxy-sync", "Service/oci-proxy-sync"},
		"kubernetes/sync-cronjob": {"CronJob/oci-proxy-sync"},
	} {
		t.Run(dir, func(t *testing.T) {
			if got := render(t, dir).keys(); !slices.Equal(got, want) {
				t.Errorf("objects %v, want %v", got, want)
			}
		})
	}
}

func TestProxyDeployment(t *testing.T) {
	objs := render(t, "kubernetes")
	dep := get[*appsv1.Deployment](t, objs, "Deployment", "oci-proxy")
	pod := dep.Spec.Template.Spec
	c := container(t, pod, "oci-proxy")

	if dep.Spec.Replicas != nil {
		t.Errorf("replicas is set (%d); the HPA owns it", *dep.Spec.Replicas)
	}
	if c.Image != "images.happy-turtle.dev/oci-proxy:1.0.0" {
		t.Errorf("image %q: kustomize's images did not apply", c.Image)
	}
	args := flags(c.Args)
	if c.Args[0] != "serve" {
		t.Fatalf("args %v, want serve first", c.Args)
	}

	t.Run("probes", func(t *testing.T) {
		checkProbe(t, "readiness", c.ReadinessProbe, "/readyz", c, "http")
		checkProbe(t, "liveness", c.LivenessProbe, "/healthz", c, "http")
		if p := c.ReadinessProbe; p != nil && p.PeriodSeconds*p.FailureThreshold > 10 {
			t.Errorf("readiness takes %d s to see a draining pod", p.PeriodSeconds*p.FailureThreshold)
		}
	})

	t.Run("grace", func(t *testing.T) {
		grace, err := time.ParseDuration(args["--shutdown-grace"])
		if err != nil {
			t.Fatalf("--shutdown-grace: %v", err)
		}
		var period time.Duration
		if p := pod.TerminationGracePeriodSeconds; p != nil {
			period = time.Duration(*p) * time.Second
		}
		if period < grace+drainAfterGrace {
			t.Errorf("terminationGracePeriodSeconds %s, want at least the grace %s plus %s for requests in flight", period, grace, drainAfterGrace)
		}
	})

	t.Run("security", func(t *testing.T) { checkSecurity(t, pod) })

	t.Run("resources", func(t *testing.T) {
		for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
			r := c.Resources
			if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
				t.Errorf("container %s: requests %v, limits %v; want cpu and memory requested and memory limited", c.Name, r.Requests, r.Limits)
			}
			if r.Limits.Memory().Cmp(*r.Requests.Memory()) < 0 {
				t.Errorf("container %s: memory limit below its request", c.Name)
			}
		}
	})

	t.Run("config", func(t *testing.T) {
		cfgPath := args["--config"]
		cm := configMapAt(t, objs, pod, c, path.Dir(cfgPath))
		cfg := parseConfig(t, cm.Data[path.Base(cfgPath)])
		if port := portOf(t, cfg.Listen); port != containerPort(t, c, "http") {
			t.Errorf("listen %q, but the container's http port is %d", cfg.Listen, containerPort(t, c, "http"))
		}
		host, port, _ := net.SplitHostPort(cfg.Admin.Listen)
		if host != "" && host != "0.0.0.0" && host != "::" {
			t.Errorf("admin.listen %q: Prometheus cannot scrape an address other than the pod's", cfg.Admin.Listen)
		}
		if port != fmt.Sprint(containerPort(t, c, "admin")) {
			t.Errorf("admin.listen %q, but the container's admin port is %d", cfg.Admin.Listen, containerPort(t, c, "admin"))
		}
		for _, f := range []string{cfg.GeoIP.Database, cfg.GeoIP.ASNDatabase} {
			if mountFor(c, f) == nil {
				t.Errorf("GeoIP database %s is on no volume", f)
			}
		}
		for _, m := range cfg.Mirrors {
			if m.CredentialsFile == "" {
				continue
			}
			v := volumeFor(t, pod, c, m.CredentialsFile)
			if v.Secret == nil {
				t.Errorf("mirror %s: credentials %s are not from a Secret", m.Name, m.CredentialsFile)
			}
		}
	})

	t.Run("geoip-sidecar", func(t *testing.T) {
		side := container(t, corev1.PodSpec{Containers: pod.InitContainers}, "geoipupdate")
		if side.RestartPolicy == nil || *side.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Error("geoipupdate is not a native sidecar (restartPolicy: Always)")
		}
		if side.StartupProbe == nil {
			t.Error("geoipupdate has no startup probe: oci-proxy would start before the databases exist")
		}
	})

	t.Run("disruption-budget", func(t *testing.T) {
		pdb := get[*policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", "oci-proxy")
		selects(t, "PodDisruptionBudget", pdb.Spec.Selector, dep.Spec.Template.Labels)
		hpa := get[*autoscalingv2.HorizontalPodAutoscaler](t, objs, "HorizontalPodAutoscaler", "oci-proxy")
		min := int32(1)
		if hpa.Spec.MinReplicas != nil {
			min = *hpa.Spec.MinReplicas
		}
		switch {
		case pdb.Spec.MaxUnavailable != nil:
			if v := pdb.Spec.MaxUnavailable.IntValue(); v < 1 || int32(v) >= min {
				t.Errorf("maxUnavailable %s with at least %d pods: a drain would block, or take every pod", pdb.Spec.MaxUnavailable, min)
			}
		case pdb.Spec.MinAvailable != nil:
			if v := pdb.Spec.MinAvailable.IntValue(); v < 1 || int32(v) >= min {
				t.Errorf("minAvailable %s with at least %d pods: a drain would block, or take every pod", pdb.Spec.MinAvailable, min)
			}
		default:
			t.Error("the PodDisruptionBudget sets neither maxUnavailable nor minAvailable")
		}
	})

	t.Run("autoscaler", func(t *testing.T) {
		hpa := get[*autoscalingv2.HorizontalPodAutoscaler](t, objs, "HorizontalPodAutoscaler", "oci-proxy")
		if ref := hpa.Spec.ScaleTargetRef; ref.Kind != "Deployment" || ref.Name != dep.Name {
			t.Errorf("HPA scales %s %s, want Deployment %s", ref.Kind, ref.Name, dep.Name)
		}
		if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 {
			t.Errorf("HPA minReplicas %v, want at least 2", hpa.Spec.MinReplicas)
		}
	})

	t.Run("services", func(t *testing.T) {
		svc := get[*corev1.Service](t, objs, "Service", "oci-proxy")
		checkService(t, svc, dep.Spec.Template.Labels, c)
		for _, p := range svc.Spec.Ports {
			if p.TargetPort.String() == "admin" {
				t.Error("the public Service exposes the admin port")
			}
		}
		admin := get[*corev1.Service](t, objs, "Service", "oci-proxy-admin")
		checkService(t, admin, dep.Spec.Template.Labels, c)
		sm := get[*monitoringv1.ServiceMonitor](t, objs, "ServiceMonitor", "oci-proxy")
		selects(t, "ServiceMonitor", &sm.Spec.Selector, admin.Labels)
		var ports []string
		for _, e := range sm.Spec.Endpoints {
			ports = append(ports, e.Port)
		}
		if !slices.Contains(ports, "admin") {
			t.Errorf("ServiceMonitor scrapes ports %v, not admin", ports)
		}
	})
}

func TestSync(t *testing.T) {
	objs := render(t, "kubernetes")
	t.Run("daemon", func(t *testing.T) {
		dep := get[*appsv1.Deployment](t, objs, "Deployment", "oci-proxy-sync")
		pod := dep.Spec.Template.Spec
		c := container(t, pod, "sync")
		args := flags(c.Args)
		if c.Args[0] != "sync" || args["--listen"] == "" {
			t.Errorf("args %v, want sync --listen", c.Args)
		}
		if portOf(t, args["--listen"]) != containerPort(t, c, "webhooks") {
			t.Errorf("--listen %s is not the webhooks port", args["--listen"])
		}
		checkProbe(t, "liveness", c.LivenessProbe, "/healthz", c, "webhooks")
		stop, err := time.ParseDuration(args["--stop-timeout"])
		if err != nil {
			t.Fatalf("--stop-timeout: %v", err)
		}
		if p := pod.TerminationGracePeriodSeconds; p == nil || time.Duration(*p)*time.Second <= stop {
			t.Errorf("terminationGracePeriodSeconds %v, want more than --stop-timeout %s", ptrString(p), stop)
		}
		checkSecurity(t, pod)
		checkService(t, get[*corev1.Service](t, objs, "Service", "oci-proxy-sync"), dep.Spec.Template.Labels, c)
		cm := configMapAt(t, objs, pod, c, path.Dir(args["--config"]))
		cfg := parseConfig(t, cm.Data[path.Base(args["--config"])])
		if v := volumeFor(t, pod, c, cfg.Sync.Webhook.TokenFile); v.Secret == nil {
			t.Errorf("webhook token %s is not from a Secret", cfg.Sync.Webhook.TokenFile)
		}
	})
	t.Run("cronjob", func(t *testing.T) {
		cron := get[*batchv1.CronJob](t, render(t, "kubernetes/sync-cronjob"), "CronJob", "oci-proxy-sync")
		pod := cron.Spec.JobTemplate.Spec.Template.Spec
		c := container(t, pod, "sync")
		if args := flags(c.Args); c.Args[0] != "sync" || args["--listen"] != "" || args["--every"] != "" {
			t.Errorf("args %v, want one sync run", c.Args)
		}
		if cron.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
			t.Errorf("concurrencyPolicy %q: two runs would copy the same blobs", cron.Spec.ConcurrencyPolicy)
		}
		checkSecurity(t, pod)
	})
}

// cloudRunService is a Knative Service as Cloud Run reads it: a pod spec with a few fields of
// its own.
type cloudRunService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Template struct {
			metav1.ObjectMeta `json:"metadata"`
			Spec              struct {
				corev1.PodSpec       `json:",inline"`
				ContainerConcurrency *int64 `json:"containerConcurrency,omitempty"`
				TimeoutSeconds       *int64 `json:"timeoutSeconds,omitempty"`
			} `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

// cloudRunJob is a Cloud Run job: executions of tasks, each a pod spec with retries.
type cloudRunJob struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Template struct {
			metav1.ObjectMeta `json:"metadata"`
			Spec              struct {
				TaskCount   int `json:"taskCount"`
				Parallelism int `json:"parallelism,omitempty"`
				Template    struct {
					Spec struct {
						corev1.PodSpec `json:",inline"`
						MaxRetries     int `json:"maxRetries"`
						TimeoutSeconds int `json:"timeoutSeconds"`
					} `json:"spec"`
				} `json:"template"`
			} `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

func readStrict(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

func TestCloudRun(t *testing.T) {
	var svc cloudRunService
	readStrict(t, "cloudrun/service.yaml", &svc)
	if svc.APIVersion != "serving.knative.dev/v1" || svc.Kind != "Service" {
		t.Errorf("cloudrun/service.yaml is a %s %s", svc.APIVersion, svc.Kind)
	}
	if got := svc.Annotations["run.googleapis.com/ingress"]; got != "internal-and-cloud-load-balancing" {
		t.Errorf("ingress %q: clients could bypass the load balancer and its X-Forwarded-For", got)
	}
	pod := svc.Spec.Template.Spec.PodSpec
	c := container(t, pod, "oci-proxy")
	args := flags(c.Args)
	checkProbe(t, "startup", c.StartupProbe, "/readyz", c, "")
	checkProbe(t, "liveness", c.LivenessProbe, "/healthz", c, "")
	// Cloud Run kills an instance 10 s after SIGTERM.
	if grace, err := time.ParseDuration(args["--shutdown-grace"]); err != nil || grace > 5*time.Second {
		t.Errorf("--shutdown-grace %q: Cloud Run allows 10 s in all after SIGTERM", args["--shutdown-grace"])
	}
	cfg := parseConfig(t, readFile(t, "cloudrun/config.yaml"))
	if port := portOf(t, cfg.Listen); len(c.Ports) != 1 || port != int(c.Ports[0].ContainerPort) {
		t.Errorf("listen %q, container ports %v", cfg.Listen, c.Ports)
	}
	if len(cfg.TrustedProxies) == 0 {
		t.Error("no trusted_proxies: every client would be the load balancer")
	}
	for _, f := range []string{cfg.GeoIP.Database, cfg.GeoIP.ASNDatabase} {
		if v := volumeFor(t, pod, c, f); v.CSI == nil || v.CSI.Driver != "gcsfuse.run.googleapis.com" {
			t.Errorf("GeoIP database %s is not on the Cloud Storage volume", f)
		}
	}
	if v := volumeFor(t, pod, c, args["--config"]); v.Secret == nil {
		t.Errorf("%s is not mounted from Secret Manager", args["--config"])
	}

	var job cloudRunJob
	readStrict(t, "cloudrun/geoipupdate-job.yaml", &job)
	jpod := job.Spec.Template.Spec.Template.Spec.PodSpec
	jc := container(t, jpod, "geoipupdate")
	var dbDir string
	for _, e := range jc.Env {
		if e.Name == "GEOIPUPDATE_DB_DIR" {
			dbDir = e.Value
		}
	}
	jv := volumeFor(t, jpod, jc, path.Join(dbDir, "GeoLite2-City.mmdb"))
	sv := volumeFor(t, pod, c, cfg.GeoIP.Database)
	if jv.CSI == nil || sv.CSI == nil || jv.CSI.VolumeAttributes["bucketName"] != sv.CSI.VolumeAttributes["bucketName"] {
		t.Errorf("the geoipupdate job writes to %+v, not to the service's GeoIP bucket", jv.VolumeSource)
	}
	if jv.CSI != nil && jv.CSI.ReadOnly != nil && *jv.CSI.ReadOnly {
		t.Error("the geoipupdate job mounts the bucket read-only")
	}
}

func ptrString(p *int64) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// container returns the named container of pod.
func container(t *testing.T, pod corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range pod.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}

// flags turns --name=value arguments into a map.
func flags(args []string) map[string]string {
	m := map[string]string{}
	for _, a := range args {
		if k, val, ok := strings.Cut(a, "="); ok && strings.HasPrefix(k, "--") {
			m[k] = val
		}
	}
	return m
}

func containerPort(t *testing.T, c corev1.Container, name string) int {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return int(p.ContainerPort)
		}
	}
	t.Fatalf("container %s has no port %s", c.Name, name)
	return 0
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	var n int
	if _, err := fmt.Sscan(port, &n); err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return n
}

// checkProbe checks an HTTP probe of path on the named port ("": any port of the container).
func checkProbe(t *testing.T, what string, p *corev1.Probe, path string, c corev1.Container, port string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("container %s: no HTTP %s probe", c.Name, what)
		return
	}
	if p.HTTPGet.Path != path {
		t.Errorf("container %s: %s probe on %s, want %s", c.Name, what, p.HTTPGet.Path, path)
	}
	switch got := p.HTTPGet.Port.String(); {
	case port != "" && got != port:
		t.Errorf("container %s: %s probe on port %s, want %s", c.Name, what, got, port)
	case port == "" && len(c.Ports) > 0 && got != fmt.Sprint(c.Ports[0].ContainerPort):
		t.Errorf("container %s: %s probe on port %s, not the serving port %d", c.Name, what, got, c.Ports[0].ContainerPort)
	}
}

// checkSecurity checks what the restricted Pod Security Standard asks, and a read-only root
// filesystem, for every container of pod.
func checkSecurity(t *testing.T, pod corev1.PodSpec) {
	t.Helper()
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod security context %+v: want runAsNonRoot and a non-zero runAsUser", psc)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod has no RuntimeDefault seccomp profile")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("pod mounts a service account token it has no use for")
	}
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("container %s has no security context", c.Name)
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			t.Errorf("container %s: root filesystem is writable", c.Name)
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("container %s: privilege escalation is allowed", c.Name)
		case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0:
			t.Errorf("container %s: capabilities %+v, want all dropped", c.Name, sc.Capabilities)
		case sc.RunAsUser != nil && *sc.RunAsUser == 0:
			t.Errorf("container %s runs as root", c.Name)
		}
	}
}

func selects(t *testing.T, what string, sel *metav1.LabelSelector, podLabels map[string]string) {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("%s selector: %v", what, err)
	}
	if s.Empty() || !s.Matches(labels.Set(podLabels)) {
		t.Errorf("%s selector %q does not select %v", what, s, podLabels)
	}
}

// checkService checks that svc selects the pods and sends to ports that the container has.
func checkService(t *testing.T, svc *corev1.Service, podLabels map[string]string, c corev1.Container) {
	t.Helper()
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(podLabels)) {
		t.Errorf("Service %s selects %v, not the pods %v", svc.Name, svc.Spec.Selector, podLabels)
	}
	for _, p := range svc.Spec.Ports {
		containerPort(t, c, p.TargetPort.String())
	}
}

// mountFor returns the container's mount that holds file, if any.
func mountFor(c corev1.Container, file string) *corev1.VolumeMount {
	for i, m := range c.VolumeMounts {
		if strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

// volumeFor returns the volume that holds file in the container.
func volumeFor(t *testing.T, pod corev1.PodSpec, c corev1.Container, file string) corev1.Volume {
	t.Helper()
	m := mountFor(c, file)
	if m == nil {
		t.Fatalf("container %s: %s is on no volume", c.Name, file)
	}
	for _, v := range pod.Volumes {
		if v.Name == m.Name {
			return v
		}
	}
	t.Fatalf("container %s mounts volume %s, which the pod lacks", c.Name, m.Name)
	return corev1.Volume{}
}

// configMapAt returns the ConfigMap mounted at dir, as a whole directory (a subPath mount would
// never see an update, so the configuration would not reload).
func configMapAt(t *testing.T, objs objects, pod corev1.PodSpec, c corev1.Container, dir string) *corev1.ConfigMap {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.MountPath != dir {
			continue
		}
		if m.SubPath != "" {
			t.Errorf("%s is mounted with a subPath: ConfigMap updates would not reach it", dir)
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				return get[*corev1.ConfigMap](t, objs, "ConfigMap", v.ConfigMap.Name)
			}
		}
	}
	t.Fatalf("container %s mounts no ConfigMap at %s", c.Name, dir)
	return nil
}

// parseConfig reads a configuration as oci-proxy does: unknown keys and bad values are errors.
func parseConfig(t *testing.T, data string) *config.Config {
	t.Helper()
	if data == "" {
		t.Fatal("empty configuration")
	}
	cfg, err := config.Parse("config.yaml", []byte(data), config.Overrides{})
	if err != nil {
		t.Fatalf("oci-proxy refuses the configuration: %v", err)
	}
	return cfg
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.FromSlash(name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
