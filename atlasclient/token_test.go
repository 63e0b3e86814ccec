package atlasclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
)

// getTokens calls Token from n goroutines at once and returns the values
// they got, failing on any error.
func getTokens(t *testing.T, s *TokenSource, n int) []string {
	t.Helper()
	var (
		wg     sync.WaitGroup
		start  = make(chan struct{})
		values = make([]string, n)
		errs   = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			tok, err := s.Token(context.Background())
			values[i], errs[i] = tok.Value, err
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
	}
	return values
}

func TestTokenRequest(t *testing.T) {
	var mu sync.Mutex
	var got *http.Request
	var body string
	fa := newFakeAtlas(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got, body = r.Clone(context.Background()), string(b)
		mu.Unlock()
		writeToken(w, "the-token-value", 3600)
	}, nil)
	clock := testutil.NewClock(testutil.Epoch)
	s := newSource(t, fa, clock, nil)
	tok, err := s.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got.Method != http.MethodPost || got.URL.Path != authPath {
		t.Errorf("request = %s %s, want POST %s", got.Method, got.URL.Path, authPath)
	}
	if got.Header.Get("Client-Id") != testClientID || got.Header.Get("Client-Secret") != testSecret {
		t.Errorf("credential headers = %q / %q", got.Header.Get("Client-Id"), got.Header.Get("Client-Secret"))
	}
	if body != "" {
		t.Errorf("body = %q, want none", body)
	}
	want := Token{Value: "the-token-value", IssuedAt: clock.Now(), Expiry: clock.Now().Add(time.Hour)}
	if tok != want {
		t.Errorf("token = %+v, want %+v", tok, want)
	}
	if strings.Contains(tok.String(), tok.Value) || strings.Contains(fmt.Sprint(tok), tok.Value) {
		t.Errorf("String() reveals the value: %q", tok.String())
	}
	if s.ClientID() != testClientID {
		t.Errorf("ClientID() = %q", s.ClientID())
	}
}

func TestTokenColdCacheSingleFetch(t *testing.T) {
	g := newGate(t)
	fa := newFakeAtlas(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		g.wait(r)
		okToken(3600)(w, r, n)
	}, nil)
	s := newSource(t, fa, testutil.NewClock(testutil.Epoch), nil)

	done := make(chan []string)
	go func() { done <- getTokens(t, s, 200) }()
	testutil.WaitFor(t, time.Second, "the authtoken call", func() bool { return fa.authCalls.Load() == 1 })
	time.Sleep(20 * time.Millisecond) // let the callers pile up on the fetch
	g.open()
	values := <-done

	for i, v := range values {
		if v != "tok-1" {
			t.Fatalf("caller %d got %q, want tok-1", i, v)
		}
	}
	if n := fa.authCalls.Load(); n != 1 {
		t.Errorf("authtoken calls = %d, want 1", n)
	}
}

func TestTokenRefreshWindow(t *testing.T) {
	g := newGate(t)
	fa := newFakeAtlas(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		if n > 1 {
			g.wait(r)
		}
		okToken(3600)(w, r, n)
	}, nil)
	clock := testutil.NewClock(testutil.Epoch)
	s := newSource(t, fa, clock, nil)

	if v := getTokens(t, s, 1)[0]; v != "tok-1" {
		t.Fatalf("first token = %q", v)
	}
	clock.Advance(44 * time.Minute) // 16 minutes left: not yet in the window
	if v := getTokens(t, s, 1)[0]; v != "tok-1" || refreshing(s) {
		t.Fatalf("at 44m: token %q, refreshing %v; want tok-1 and no refresh", v, refreshing(s))
	}

	clock.Advance(2 * time.Minute) // 14 minutes left: in the window
	for i, v := range getTokens(t, s, 200) {
		if v != "tok-1" {
			t.Fatalf("caller %d got %q during the refresh, want the still-valid tok-1", i, v)
		}
	}
	if !refreshing(s) {
		t.Fatal("no refresh in flight in the refresh window")
	}
	g.open()
	waitRefresh(t, s)

	if n := fa.authCalls.Load(); n != 2 {
		t.Errorf("authtoken calls = %d, want 2", n)
	}
	if v := getTokens(t, s, 1)[0]; v != "tok-2" {
		t.Errorf("after the refresh: %q, want tok-2", v)
	}
	if m := fa.maxInflight.Load(); m != 1 {
		t.Errorf("authtoken calls in flight at once = %d, want 1", m)
	}
}

func TestTokenNeverUsedPastExpiry(t *testing.T) {
	g := newGate(t)
	fa := newFakeAtlas(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		if n > 1 {
			g.wait(r) // the refresh never completes during the test
		}
		okToken(60)(w, r, n)
	}, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"data":[]}`)
	})
	clock := testutil.NewClock(testutil.Epoch)
	s := newSource(t, fa, clock, nil)
	hc := &http.Client{Transport: &Transport{Source: s}}

	get := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fa.URL+"/v1/docstream/extracts?batch_id=B", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}

	if err := get(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(59*time.Second + 999*time.Millisecond)
	if err := get(); err != nil {
		t.Fatalf("1ms before expiry: %v", err)
	}
	clock.Advance(time.Millisecond) // exactly at expiry
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	tok, err := s.Token(ctx)
	if err == nil {
		t.Fatalf("at expiry Token returned %q", tok.Value)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("at expiry: %v, want the caller's deadline while the refresh is pending", err)
	}
	if err := get(); err == nil {
		t.Error("a request was sent with an expired token")
	}
	if n := fa.apiCalls.Load(); n != 2 {
		t.Errorf("API calls = %d, want 2 (none after expiry)", n)
	}
}

func TestTokenFailedRefreshKeepsServingValidToken(t *testing.T) {
	fa := newFakeAtlas(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		if n > 1 {
			http.Error(w, "upstream down", http.StatusBadGateway)
			return
		}
		okToken(100)(w, r, n)
	}, nil)
	clock := testutil.NewClock(testutil.Epoch)
	s := newSource(t, fa, clock, nil)
	getTokens(t, s, 1)

	clock.Advance(90 * time.Second)
	if v := getTokens(t, s, 1)[0]; v != "tok-1" {
		t.Fatalf("in the window: %q", v)
	}
	waitRefresh(t, s)
	if n := fa.authCalls.Load(); n != 1+fetchAttempts {
		t.Errorf("authtoken calls = %d, want %d", n, 1+fetchAttempts)
	}
	// Still valid, and in cooldown: served without another call.
	for range 10 {
		if v := getTokens(t, s, 1)[0]; v != "tok-1" {
			t.Fatalf("after a failed refresh: %q", v)
		}
	}
	if refreshing(s) {
		t.Error("a refresh started during the cooldown")
	}
	clock.Advance(10 * time.Second) // expired
	_, err := s.Token(context.Background())
	if !errors.Is(err, ErrTokenUnavailable) || !strings.Contains(err.Error(), "502") {
		t.Errorf("after expiry: %v, want ErrTokenUnavailable with the cause", err)
	}
}

func TestTokenBackoffNoStorm(t *testing.T) {
	var healthy atomic.Bool
	fa := newFakeAtlas(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		if !healthy.Load() {
			http.Error(w, "unavailable, secret was "+testSecret, http.StatusServiceUnavailable)
			return
		}
		okToken(3600)(w, r, n)
	}, nil)
	clock := testutil.NewClock(testutil.Epoch)
	s := newSource(t, fa, clock, nil)

	var wg sync.WaitGroup
	var failures atomic.Int64
	deadline := time.Now().Add(150 * time.Millisecond)
	for range 50 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				_, err := s.Token(context.Background())
				if !errors.Is(err, ErrTokenUnavailable) {
					t.Errorf("Token: %v, want ErrTokenUnavailable", err)
					return
				}
				if strings.Contains(err.Error(), testSecret) {
					t.Errorf("error leaks the secret: %v", err)
					return
				}
				failures.Add(1)
				time.Sleep(time.Millisecond)
			}
		})
	}
	wg.Wait()
	// One refresh of fetchAttempts calls; then the cooldown (the clock is
	// frozen) answers every caller with the last error.
	if n := fa.authCalls.Load(); n != fetchAttempts {
		t.Errorf("authtoken calls while 50 callers hammered = %d, want %d (failures seen: %d)", n, fetchAttempts, failures.Load())
	}

	healthy.Store(true)
	clock.Advance(time.Second) // past the cooldown
	tok, err := s.Token(context.Background())
	if err != nil || tok.Value != fmt.Sprintf("tok-%d", fetchAttempts+1) {
		t.Fatalf("after healing: %q, %v", tok.Value, err)
	}
	if m := fa.maxInflight.Load(); m != 1 {
		t.Errorf("authtoken calls in flight at once = %d, want 1", m)
	}
}

func TestTokenBackoffRealClock(t *testing.T) {
	var healthy atomic.Bool
	fa := newFakeAtlas(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		if !healthy.Load() {
			http.Error(w, "unavailable", http.StatusInternalServerError)
			return
		}
		okToken(3600)(w, r, n)
	}, nil)
	s := newSource(t, fa, nil, func(o *TokenOptions) {
		o.MinBackoff = 10 * time.Millisecond
		o.MaxBackoff = 20 * time.Millisecond
	})

	var wg sync.WaitGroup
	var tries atomic.Int64
	deadline := time.Now().Add(300 * time.Millisecond)
	for range 50 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				tries.Add(1)
				if _, err := s.Token(context.Background()); err == nil {
					t.Error("Token succeeded against a failing server")
					return
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	wg.Wait()
	// Each refresh makes 3 calls over at least 5+10ms of backoff, then
	// cools down at least 5ms: at most 300/20 = 15 refreshes.
	if n := fa.authCalls.Load(); n > 15*fetchAttempts+fetchAttempts {
		t.Errorf("authtoken calls = %d for %d Token calls: retry storm", n, tries.Load())
	} else {
		t.Logf("authtoken calls = %d for %d Token calls", n, tries.Load())
	}

	healthy.Store(true)
	testutil.WaitFor(t, time.Second, "recovery", func() bool {
		_, err := s.Token(context.Background())
		return err == nil
	})
}

func TestTokenRetryAfter(t *testing.T) {
	fa := newFakeAtlas(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "slow down", http.StatusTooManyRequests)
	}, nil)
	clock := testutil.NewClock(testutil.Epoch)
	s := newSource(t, fa, clock, func(o *TokenOptions) {
		o.MaxBackoff = 40 * time.Millisecond // Retry-After of 1s is bounded to this
	})

	start := time.Now()
	_, err := s.Token(context.Background())
	if !errors.Is(err, ErrTokenUnavailable) {
		t.Fatalf("Token: %v", err)
	}
	if took := time.Since(start); took < 80*time.Millisecond || took > 2*time.Second {
		t.Errorf("a refresh with two Retry-After waits took %v, want about 2×40ms", took)
	}
	// The cooldown is the bounded Retry-After, not the 1ms backoff.
	clock.Advance(30 * time.Millisecond)
	if _, err := s.Token(context.Background()); err == nil || fa.authCalls.Load() != fetchAttempts {
		t.Fatalf("during Retry-After cooldown: err %v, calls %d", err, fa.authCalls.Load())
	}
	clock.Advance(11 * time.Millisecond)
	s.Token(context.Background())
	if n := fa.authCalls.Load(); n != 2*fetchAttempts {
		t.Errorf("after the cooldown: %d calls, want %d", n, 2*fetchAttempts)
	}
}

func TestTokenCredentialsRejected(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		body    string
		message string
	}{
		{"missing", 400, `{"error": "Missing Client-Id or Client-Secret"}`, "Missing Client-Id or Client-Secret"},
		{"invalid", 401, `{"error_code": "401", "error_message": "Invalid credentials"}`, "Invalid credentials"},
		{"echoing server", 401, "bad secret " + testSecret, "bad secret [redacted]"},
		{"empty body", 401, "", "Unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fa := newFakeAtlas(t, func(w http.ResponseWriter, r *http.Request, n int64) {
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}, nil)
			s := newSource(t, fa, testutil.NewClock(testutil.Epoch), nil)

			for range 20 {
				_, err := s.Token(context.Background())
				var ce *CredentialsError
				if !errors.As(err, &ce) {
					t.Fatalf("Token: %v (%T), want *CredentialsError", err, err)
				}
				want := CredentialsError{ClientID: testClientID, StatusCode: tt.status, Message: tt.message}
				if *ce != want {
					t.Errorf("error = %+v, want %+v", *ce, want)
				}
				wantText := fmt.Sprintf("atlas rejected the credentials of client_id %q (%d: %s)", testClientID, tt.status, tt.message)
				if err.Error() != wantText {
					t.Errorf("Error() = %q, want %q", err.Error(), wantText)
				}
				if strings.Contains(err.Error(), testSecret) {
					t.Fatalf("error leaks the secret: %v", err)
				}
				if errors.Is(err, ErrTokenUnavailable) {
					t.Error("credentials error also matches ErrTokenUnavailable")
				}
			}
			// Not retried, and the cooldown holds further callers off.
			if n := fa.authCalls.Load(); n != 1 {
				t.Errorf("authtoken calls = %d, want 1", n)
			}
		})
	}
}

func TestTokenResponses(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	now := clock.Now()
	jwtWithExp := func(exp time.Time) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "x", "exp": exp.Unix()}).SignedString([]byte("k"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	noExp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "x"}).SignedString([]byte("k"))
	in10m := jwtWithExp(now.Add(10 * time.Minute))

	tests := []struct {
		name   string
		body   string
		expiry time.Time // zero: an error is expected
	}{
		{"number", `{"access_token":"a","expires_in":3600}`, now.Add(time.Hour)},
		{"string", `{"access_token":"a","expires_in":"1800"}`, now.Add(30 * time.Minute)},
		{"fraction", `{"access_token":"a","expires_in":1.5}`, now.Add(1500 * time.Millisecond)},
		{"jwt exp, no expires_in", `{"access_token":"` + in10m + `"}`, now.Add(10 * time.Minute)},
		{"jwt exp, expires_in 0", `{"access_token":"` + in10m + `","expires_in":0}`, now.Add(10 * time.Minute)},
		{"jwt exp, expires_in null", `{"access_token":"` + in10m + `","expires_in":null}`, now.Add(10 * time.Minute)},
		{"expires_in wins over exp", `{"access_token":"` + in10m + `","expires_in":60}`, now.Add(time.Minute)},
		{"opaque, no expires_in", `{"access_token":"opaque"}`, time.Time{}},
		{"jwt without exp", `{"access_token":"` + noExp + `"}`, time.Time{}},
		{"jwt expired", `{"access_token":"` + jwtWithExp(now.Add(-time.Minute)) + `"}`, time.Time{}},
		{"negative", `{"access_token":"a","expires_in":-5}`, time.Time{}},
		{"garbage expires_in", `{"access_token":"a","expires_in":"soon"}`, time.Time{}},
		{"missing access_token", `{"expires_in":3600}`, time.Time{}},
		{"empty", ``, time.Time{}},
		{"not json", `<html>oops</html>`, time.Time{}},
		{"array", `[]`, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := parseToken([]byte(tt.body), now)
			if tt.expiry.IsZero() {
				if err == nil {
					t.Fatalf("parseToken = %+v, want an error", tok)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseToken: %v", err)
			}
			if !tok.Expiry.Equal(tt.expiry) || !tok.IssuedAt.Equal(now) {
				t.Errorf("issued %v, expiry %v; want %v, %v", tok.IssuedAt, tok.Expiry, now, tt.expiry)
			}
		})
	}
}

func TestTokenBadBodyIsRetried(t *testing.T) {
	fa := newFakeAtlas(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		if n < fetchAttempts {
			io.WriteString(w, `{"token":"wrong shape"}`)
			return
		}
		okToken(3600)(w, r, n)
	}, nil)
	s := newSource(t, fa, testutil.NewClock(testutil.Epoch), nil)
	tok, err := s.Token(context.Background())
	if err != nil || tok.Value != fmt.Sprintf("tok-%d", fetchAttempts) {
		t.Fatalf("Token = %q, %v", tok.Value, err)
	}
}

func TestTokenJWTExpiryDrivesRefresh(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	exp := clock.Now().Add(40 * time.Minute)
	value, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": exp.Unix()}).SignedString([]byte("k"))
	fa := newFakeAtlas(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		if n == 1 {
			fmt.Fprintf(w, `{"access_token":%q}`, value)
			return
		}
		okToken(3600)(w, r, n)
	}, nil)
	s := newSource(t, fa, clock, nil)
	tok, err := s.Token(context.Background())
	if err != nil || !tok.Expiry.Equal(exp) {
		t.Fatalf("Token = %v, %v; want expiry %v", tok, err, exp)
	}
	clock.Advance(29 * time.Minute) // 11 of 40 minutes left: not in the window
	s.Token(context.Background())
	if refreshing(s) {
		t.Fatal("refresh started too early")
	}
	clock.Advance(2 * time.Minute) // 9 left
	s.Token(context.Background())
	waitRefresh(t, s)
	if n := fa.authCalls.Load(); n != 2 {
		t.Errorf("authtoken calls = %d, want 2", n)
	}
}

func TestTokenCallerContext(t *testing.T) {
	g := newGate(t)
	fa := newFakeAtlas(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		g.wait(r)
		okToken(3600)(w, r, n)
	}, nil)
	s := newSource(t, fa, testutil.NewClock(testutil.Epoch), nil)

	patient := make(chan error, 1)
	go func() {
		_, err := s.Token(context.Background())
		patient <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.Token(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("impatient caller: %v, want DeadlineExceeded", err)
	}
	g.open()
	if err := <-patient; err != nil {
		t.Fatalf("patient caller: %v", err)
	}
	if n := fa.authCalls.Load(); n != 1 {
		t.Errorf("authtoken calls = %d, want 1", n)
	}
}

func TestTokenInvalidate(t *testing.T) {
	fa := newFakeAtlas(t, nil, nil)
	s := newSource(t, fa, testutil.NewClock(testutil.Epoch), nil)
	getTokens(t, s, 1)
	s.Invalidate("some-other-token")
	s.Invalidate("")
	if v := getTokens(t, s, 1)[0]; v != "tok-1" {
		t.Fatalf("after invalidating another value: %q", v)
	}
	s.Invalidate("tok-1")
	if v := getTokens(t, s, 1)[0]; v != "tok-2" {
		t.Fatalf("after invalidating tok-1: %q", v)
	}
}

func TestTokenClose(t *testing.T) {
	fa := newFakeAtlas(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		<-r.Context().Done() // hang until the client gives up
	}, nil)
	s := newSource(t, fa, testutil.NewClock(testutil.Epoch), nil)

	waiting := make(chan error, 1)
	go func() {
		_, err := s.Token(context.Background())
		waiting <- err
	}()
	testutil.WaitFor(t, time.Second, "the authtoken call", func() bool { return fa.authCalls.Load() == 1 })

	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not cancel the refresh in flight")
	}
	if err := <-waiting; !errors.Is(err, ErrClosed) {
		t.Errorf("waiting caller: %v, want ErrClosed", err)
	}
	if _, err := s.Token(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Token after Close: %v, want ErrClosed", err)
	}
	s.Close() // idempotent
}

type recordingObserver struct {
	mu       sync.Mutex
	outcomes []string
}

func (o *recordingObserver) TokenFetched(outcome string, took time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.outcomes = append(o.outcomes, outcome)
}

func TestTokenObserver(t *testing.T) {
	fa := newFakeAtlas(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		switch n {
		case 1:
			http.Error(w, "oops", http.StatusInternalServerError)
		case 2:
			okToken(3600)(w, r, n)
		default:
			http.Error(w, "no", http.StatusUnauthorized)
		}
	}, nil)
	obs := &recordingObserver{}
	s := newSource(t, fa, testutil.NewClock(testutil.Epoch), func(o *TokenOptions) { o.Observer = obs })
	s.Token(context.Background())
	s.Invalidate("tok-2")
	s.Token(context.Background())
	want := []string{OutcomeError, OutcomeSuccess, OutcomeCredentialsRejected}
	if fmt.Sprint(obs.outcomes) != fmt.Sprint(want) {
		t.Errorf("outcomes = %v, want %v", obs.outcomes, want)
	}
}

func TestNewTokenSourceValidation(t *testing.T) {
	ok := TokenOptions{Endpoint: "https://docstream.dev.kreditmind.com/", ClientID: "id", ClientSecret: testSecret}
	tests := []struct {
		name string
		edit func(*TokenOptions)
		want string // error substring; empty for success
	}{
		{"ok", func(*TokenOptions) {}, ""},
		{"path prefix", func(o *TokenOptions) { o.Endpoint = "http://localhost:8080/atlas" }, ""},
		{"no endpoint", func(o *TokenOptions) { o.Endpoint = "" }, "endpoint is empty"},
		{"relative", func(o *TokenOptions) { o.Endpoint = "docstream.dev.kreditmind.com" }, "http or https"},
		{"bad url", func(o *TokenOptions) { o.Endpoint = "https://[::1" }, "invalid endpoint"},
		{"query", func(o *TokenOptions) { o.Endpoint = "https://h/?x=1" }, "query"},
		{"no id", func(o *TokenOptions) { o.ClientID = "" }, "client id is empty"},
		{"no secret", func(o *TokenOptions) { o.ClientSecret = "" }, "client secret is empty"},
		{"refresh before 1", func(o *TokenOptions) { o.RefreshBefore = 1 }, "refresh before"},
		{"backoffs reversed", func(o *TokenOptions) { o.MinBackoff, o.MaxBackoff = time.Minute, time.Second }, "max backoff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := ok
			tt.edit(&opts)
			s, err := NewTokenSource(opts)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("NewTokenSource: %v", err)
				}
				s.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewTokenSource error = %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Errorf("error leaks the secret: %v", err)
			}
		})
	}
	s, _ := NewTokenSource(TokenOptions{Endpoint: "http://h/base/", ClientID: "id", ClientSecret: "x"})
	if s.url != "http://h/base/v1/docstream/authtoken" {
		t.Errorf("authtoken URL = %q", s.url)
	}
}
