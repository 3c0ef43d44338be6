package redirector

import (
	"bytes"
	"html/template"
)

// IndexInfo describes the registry on its index page.
type IndexInfo struct {
	Name     string   // registry host name as users type it, e.g. images.example.dev; "" = generic
	Example  string   // an image to show in the pull example, e.g. app:1.0
	Upstream string   // where manifests come from
	Mirrors  []string // mirror descriptions, e.g. "eu-west (DE)"
	// Routes describe the name prefixes with an upstream of their own, e.g.
	// "tools/ → https://ghcr.io/v2/acme/ (proxy)"; none when there is one upstream.
	Routes  []string
	Version string
}

// The page is rendered once at start: it must not echo anything from a request (no Host header),
// which also makes it free to serve.
var indexTemplate = template.Must(template.New("index").Parse(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{if .Name}}{{.Name}}{{else}}Container registry{{end}}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:3rem auto;padding:0 1rem;color:#222}
code,pre{background:#f3f3f3;border-radius:4px}pre{padding:.8rem;overflow-x:auto}h1{font-size:1.6rem}</style>
</head>
<body>
<h1>{{if .Name}}{{.Name}}{{else}}Container registry{{end}}</h1>
<p>This is a read-only container image registry. It speaks the OCI distribution API, so any client
pulls from it: docker, podman, containerd, skopeo, crane.</p>
<pre>docker pull {{if .Name}}{{.Name}}{{else}}REGISTRY{{end}}/{{if .Example}}{{.Example}}{{else}}IMAGE:TAG{{end}}</pre>
<p>Manifests and tags come from the upstream registry{{if .Upstream}} (<code>{{.Upstream}}</code>){{end}}.
Layers are served from the nearest mirror that holds them{{if .Mirrors}}:{{else}}, or from the upstream.{{end}}</p>
{{if .Mirrors}}<ul>{{range .Mirrors}}<li>{{.}}</li>{{end}}</ul>{{end}}
{{if .Routes}}<p>Names are served from these upstreams, the longest prefix first:</p>
<ul>{{range .Routes}}<li><code>{{.}}</code></li>{{end}}</ul>{{end}}
<p>Pushing is not possible here: push to the upstream registry.</p>
<p><small>oci-proxy {{.Version}}</small></p>
</body>
</html>
`))

func renderIndex(info IndexInfo) []byte {
	var b bytes.Buffer
	if err := indexTemplate.Execute(&b, info); err != nil {
		// The template is fixed and its data are strings: execution cannot fail.
		panic(err)
	}
	return b.Bytes()
}
