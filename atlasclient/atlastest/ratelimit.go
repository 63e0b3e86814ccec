package atlastest

import (
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	msgRateLimited = "Too many requests"
	maxRequests    = 10000
)

// rateKey is a client's window at a limit.
type rateKey struct {
	limit  string // the endpoint of the limit, "" for all
	client string
}

// RequestRecord is one request to an Atlas endpoint, as the request log
// keeps it.
type RequestRecord struct {
	// Time is when it arrived, on the simulator's clock.
	Time time.Time `json:"time"`
	// Client is the Client-Id of an authtoken request, the subject of
	// the Token of the others ("" when it has none the simulator signed).
	Client string `json:"client"`
}

// SetRateLimit limits the requests a client may make to endpoint ("" for
// every endpoint together) to perSecond in any second of the simulator's
// clock (see Options.RateLimits); perSecond <= 0 lifts the limit.
func (s *Simulator) SetRateLimit(endpoint string, perSecond int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if perSecond <= 0 {
		delete(s.rateLimits, endpoint)
		return
	}
	if s.rateLimits == nil {
		s.rateLimits = map[string]int{}
	}
	s.rateLimits[endpoint] = perSecond
}

// client names the client of r at endpoint.
func (s *Simulator) client(endpoint string, r *http.Request) string {
	if endpoint == EndpointAuthToken || endpoint == EndpointBulkAuthToken {
		return r.Header.Get("Client-Id")
	}
	var claims tokenClaims
	_, _, err := jwt.NewParser().ParseUnverified(r.Header.Get("Token"), &claims)
	if err != nil {
		return ""
	}
	return claims.Subject
}

// logRequest records a request to endpoint. s.mu is held.
func (s *Simulator) logRequest(endpoint string, r *http.Request) {
	log := append(s.requests[endpoint], RequestRecord{Time: s.now(), Client: s.client(endpoint, r)})
	if len(log) > maxRequests {
		log = slices.Delete(log, 0, len(log)-maxRequests)
	}
	s.requests[endpoint] = log
}

// admit applies the rate limits to a request to endpoint: it reports
// whether the request may go on and, if not, how long until it could.
func (s *Simulator) admit(endpoint string, r *http.Request) (time.Duration, bool) {
	client := s.client(endpoint, r)
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []rateKey
	var wait time.Duration
	for _, limit := range []string{endpoint, ""} {
		n, ok := s.rateLimits[limit]
		if !ok {
			continue
		}
		k := rateKey{limit: limit, client: client}
		times := slices.DeleteFunc(s.admitted[k], func(t time.Time) bool { return !t.After(now.Add(-time.Second)) })
		s.admitted[k] = times
		if len(times) >= n {
			wait = max(wait, times[len(times)-n].Add(time.Second).Sub(now))
		}
		keys = append(keys, k)
	}
	if wait > 0 {
		return wait, false
	}
	for _, k := range keys {
		s.admitted[k] = append(s.admitted[k], now)
	}
	return 0, true
}

// retryAfterSeconds renders d as a Retry-After value: whole seconds,
// rounded up, at least 1.
func retryAfterSeconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

// Requests returns the log of requests to endpoint ("" for every
// endpoint, in arrival order) since the last reset, oldest first: the
// last 10000 of each endpoint. Failed, delayed and rate-limited requests
// are in it; control requests are not.
func (s *Simulator) Requests(endpoint string) []RequestRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	if endpoint != "" {
		return slices.Clone(s.requests[endpoint])
	}
	var all []RequestRecord
	for _, log := range s.requests {
		all = append(all, log...)
	}
	slices.SortStableFunc(all, func(a, b RequestRecord) int { return a.Time.Compare(b.Time) })
	return all
}

// PeakRate returns the most requests to endpoint ("" for every endpoint)
// that arrived within any span of window on the simulator's clock
// (window <= 0 means a second), from client, or from any client if
// client is "". A test checks a client's polling rate with it:
// PeakRate(EndpointExtracts, "", time.Second) <= 2.
func (s *Simulator) PeakRate(endpoint, client string, window time.Duration) int {
	if window <= 0 {
		window = time.Second
	}
	var times []time.Time
	for _, r := range s.Requests(endpoint) {
		if client == "" || r.Client == client {
			times = append(times, r.Time)
		}
	}
	slices.SortFunc(times, time.Time.Compare)
	peak, lo := 0, 0
	for hi := range times {
		for times[hi].Sub(times[lo]) >= window {
			lo++
		}
		peak = max(peak, hi-lo+1)
	}
	return peak
}
