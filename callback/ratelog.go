package callback

import (
	"sync"
	"time"
)

// rejectLogEvery is how often at most the callback route logs a refused
// token for one reason.
const rejectLogEvery = 10 * time.Second

// rateLog lets one log line a key through per interval and counts the
// ones it holds back, so that a flood of refused requests costs a line
// per reason, not one each. Keys are a small fixed set (the reasons).
type rateLog struct {
	every time.Duration

	mu   sync.Mutex
	keys map[string]*rateLogKey
}

type rateLogKey struct {
	last time.Time
	held int
}

// allow reports whether a line for key may be written at now and, if
// so, how many lines for key it held back since the last one.
func (l *rateLog) allow(key string, now time.Time) (ok bool, held int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.keys == nil {
		l.keys = make(map[string]*rateLogKey)
	}
	k := l.keys[key]
	if k == nil {
		k = new(rateLogKey)
		l.keys[key] = k
	} else if now.Sub(k.last) < l.every {
		k.held++
		return false, 0
	}
	held, k.held, k.last = k.held, 0, now
	return true, held
}
