package atlastest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

const (
	maxAuthResponse     = 1 << 20
	maxCallbackResponse = 64 << 10
	callbackUserAgent   = "atlas-docstream-simulator"
)

// CallbackTarget is a customer's callback configuration, as Atlas holds it.
type CallbackTarget struct {
	// AuthURL is POSTed with Client-Id and Client-Secret headers and must
	// answer 2xx with JSON carrying access_token. When empty, the auth step
	// is skipped and the callback is sent without a Token header (to test
	// that receivers reject it).
	AuthURL string
	// CallbackURL receives the extraction payload.
	CallbackURL string
	// ClientID and ClientSecret are what Atlas presents at AuthURL.
	ClientID, ClientSecret string
}

// Delivery records one DeliverCallback attempt.
type Delivery struct {
	// BatchID is the delivered batch.
	BatchID string
	// AuthStatus is the status auth_url answered, 0 if it was not reached.
	AuthStatus int
	// CallbackStatus is the status callback_url answered, 0 if it was not
	// reached.
	CallbackStatus int
	// Err is why the delivery failed, nil if it succeeded.
	Err error
	// Body is the body callback_url answered (up to 64 KiB); the payload
	// sent is BatchPayload(BatchID).
	Body []byte
}

// MarshalJSON encodes d as {"batch_id", "auth_status", "callback_status",
// "error", "body"}, error and body as strings.
func (d Delivery) MarshalJSON() ([]byte, error) {
	v := struct {
		BatchID        string `json:"batch_id"`
		AuthStatus     int    `json:"auth_status"`
		CallbackStatus int    `json:"callback_status"`
		Error          string `json:"error,omitempty"`
		Body           string `json:"body"`
	}{BatchID: d.BatchID, AuthStatus: d.AuthStatus, CallbackStatus: d.CallbackStatus, Body: string(d.Body)}
	if d.Err != nil {
		v.Error = d.Err.Error()
	}
	return json.Marshal(v)
}

// DeliverCallback plays Atlas delivering batchID to t: it POSTs to
// t.AuthURL with the headers Client-Id and Client-Secret, reads
// access_token from the JSON answer, then POSTs BatchPayload(batchID) as
// JSON to t.CallbackURL with the header Token: <access_token>. Either
// answer must be 2xx. Every attempt is recorded (see Deliveries); the
// returned error is also Delivery.Err.
func (s *Simulator) DeliverCallback(ctx context.Context, t CallbackTarget, batchID string) (Delivery, error) {
	d := Delivery{BatchID: batchID}
	d.Err = s.deliver(ctx, t, &d)
	s.mu.Lock()
	s.deliveries = append(s.deliveries, d)
	if len(s.deliveries) > maxDeliveries {
		s.deliveries = s.deliveries[len(s.deliveries)-maxDeliveries:]
	}
	s.mu.Unlock()
	return d, d.Err
}

func (s *Simulator) deliver(ctx context.Context, t CallbackTarget, d *Delivery) error {
	payload, err := s.BatchPayload(d.BatchID)
	if err != nil {
		return err
	}
	return s.post(ctx, t, payload, d)
}

// post delivers payload to t as DeliverCallback does.
func (s *Simulator) post(ctx context.Context, t CallbackTarget, payload []byte, d *Delivery) error {
	var err error
	if err := checkURL("callback_url", t.CallbackURL); err != nil {
		return err
	}

	var token string
	if t.AuthURL != "" {
		if err := checkURL("auth_url", t.AuthURL); err != nil {
			return err
		}
		token, err = s.fetchCallbackToken(ctx, t, d)
		if err != nil {
			return err
		}
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.CallbackURL, bytes.NewReader(payload))
	if err != nil {
		return fmt.Errorf("callback_url: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", callbackUserAgent)
	if token != "" {
		req.Header.Set("Token", token)
	}
	resp, err := s.callbackClient.Do(req)
	if err != nil {
		return fmt.Errorf("callback_url: %w", err)
	}
	defer resp.Body.Close()
	d.CallbackStatus = resp.StatusCode
	d.Body, err = io.ReadAll(io.LimitReader(resp.Body, maxCallbackResponse))
	if err != nil {
		return fmt.Errorf("callback_url: reading response: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("callback_url answered %d", resp.StatusCode)
	}
	return nil
}

// fetchCallbackToken authenticates at t.AuthURL.
func (s *Simulator) fetchCallbackToken(ctx context.Context, t CallbackTarget, d *Delivery) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.AuthURL, http.NoBody)
	if err != nil {
		return "", fmt.Errorf("auth_url: %w", err)
	}
	req.Header.Set("Client-Id", t.ClientID)
	req.Header.Set("Client-Secret", t.ClientSecret)
	req.Header.Set("User-Agent", callbackUserAgent)
	resp, err := s.callbackClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("auth_url: %w", err)
	}
	defer resp.Body.Close()
	d.AuthStatus = resp.StatusCode
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", fmt.Errorf("auth_url answered %d", resp.StatusCode)
	}
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAuthResponse)).Decode(&body); err != nil {
		return "", fmt.Errorf("auth_url: decoding response: %w", err)
	}
	if body.AccessToken == "" {
		return "", errors.New("auth_url: response has no access_token")
	}
	return body.AccessToken, nil
}

func checkURL(name, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s must be an absolute http(s) URL", name)
	}
	return nil
}

// Deliveries returns the recorded DeliverCallback attempts, oldest first
// (the last 1000).
func (s *Simulator) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Delivery(nil), s.deliveries...)
}
