package mirrors

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// The errors of a presence check that was not made, or not answered, because the mirror is busy.
// They are not failures: the mirror's health stays as it was, and nothing is cached.
var (
	errOverBudget = errors.New("presence check budget spent")
	errPaced      = errors.New("paced after a throttled answer")
)

func isBusy(err error) bool { return errors.Is(err, errOverBudget) || errors.Is(err, errPaced) }

// budget is one mirror's allowance of presence checks: a token bucket refilled at rate a second
// and holding at most one second's worth, so that a burst as large as the rate passes at once and
// a flood gets the rate and no more. A mutex is enough: only checks of blobs the cache does not
// know reach it, and they cost a network round trip anyway.
type budget struct {
	rate float64 // tokens a second; 0: no budget

	mu     sync.Mutex
	tokens float64
	last   int64 // unix nanoseconds of the last refill
}

func (b *budget) init(perSecond int, now int64) {
	b.rate = float64(perSecond)
	b.tokens, b.last = b.rate, now
}

// take spends one check at now, if there is one to spend.
func (b *budget) take(now int64) bool {
	if b.rate == 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if d := now - b.last; d > 0 {
		b.tokens = min(b.rate, b.tokens+float64(d)*b.rate/float64(time.Second))
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// admit says whether a presence check of a blob not in the cache may go to mirror i now, or why
// not (an error for which isBusy is true).
func (s *Selector) admit(i int) error {
	st := &s.state[i]
	now := s.now().UnixNano()
	if now < st.pacedUntil.Load() {
		st.skippedPaced.Add(1)
		return errPaced
	}
	if !st.budget.take(now) {
		st.skippedBudget.Add(1)
		return errOverBudget
	}
	return nil
}

// paced reports whether mirror i asked for a pause that has not ended at now.
func (s *Selector) paced(i int, now int64) bool { return now < s.state[i].pacedUntil.Load() }

// pace makes no more checks at mirror i until the wait te asks for has passed (MinPause to
// MaxPause). A pause only ever grows: answers that were in flight together each ask for theirs.
// A mirror that keeps throttling is logged once, not once per pause: a pause is logged when it
// begins MaxPause or more after the last one ended.
func (s *Selector) pace(i int, te *ThrottledError) {
	st := &s.state[i]
	wait := min(max(te.RetryAfter, MinPause), MaxPause)
	now := s.now()
	until := now.Add(wait).UnixNano()
	for {
		old := st.pacedUntil.Load()
		if old >= until {
			return
		}
		if !st.pacedUntil.CompareAndSwap(old, until) {
			continue
		}
		if old+int64(MaxPause) <= now.UnixNano() {
			s.log.Warn("mirror asks for fewer requests: presence checks paced", "mirror", s.mirrors[i].name,
				"status", te.Status, "pause", wait)
		}
		return
	}
}

// busyNote says, for explanations, why a check of mirror i was not made.
func (s *Selector) busyNote(i int, err error) string {
	if errors.Is(err, errOverBudget) {
		return fmt.Sprintf("presence check skipped: budget of %d checks/s spent", int(s.state[i].budget.rate))
	}
	note := "presence check skipped: paced"
	if u := s.state[i].pacedUntil.Load(); u != 0 {
		note += " until " + time.Unix(0, u).UTC().Format(time.TimeOnly)
	}
	var te *ThrottledError
	if errors.As(err, &te) {
		note += " after " + te.Error()
	}
	return note
}
