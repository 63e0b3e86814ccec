package simulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
	"github.com/caddy-atlas/caddy-atlas/internal/demostory"
)

// maxNarrated is how much of an answer narrate reads.
const maxNarrated = 256 << 10

// recorder keeps the status and the start of the body the simulator
// answers, for narrate.
type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if room := maxNarrated - r.body.Len(); room > 0 {
		r.body.Write(p[:min(len(p), room)])
	}
	return r.ResponseWriter.Write(p)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// apiError is the message of an error answer, in either of Atlas's forms.
func apiError(body []byte) string {
	var e struct {
		Error        string `json:"error"`
		ErrorMessage string `json:"error_message"`
	}
	_ = json.Unmarshal(body, &e)
	if e.Error != "" {
		return e.Error
	}
	return e.ErrorMessage
}

// narrate prints, in plain words, what the simulator did for r: the
// line of the Atlas API (or of the simulator's callback control
// endpoint) the demo's story tells. Other requests are not told.
func narrate(r *http.Request, rec *recorder) {
	status, body := rec.status, rec.body.Bytes()
	failed := status < 200 || status > 299
	switch r.URL.Path {
	case atlastest.APIPrefix + atlastest.EndpointAuthToken:
		client := r.Header.Get("Client-Id")
		if failed {
			demostory.Printf("atlas: token refused to %q (%d): %s", client, status, apiError(body))
			return
		}
		var t struct {
			ExpiresIn int64 `json:"expires_in"`
		}
		_ = json.Unmarshal(body, &t)
		demostory.Printf("atlas: token issued to %q, valid %s", client, time.Duration(t.ExpiresIn)*time.Second)

	case atlastest.APIPrefix + atlastest.EndpointMultiUpload:
		if failed {
			demostory.Printf("atlas: upload refused (%d): %s", status, apiError(body))
			return
		}
		var id string
		var docs []string
		var list []struct {
			BatchID    string `json:"batch_id"`
			DocumentID string `json:"document_id"`
		}
		if json.Unmarshal(body, &list) == nil {
			for _, d := range list {
				id = d.BatchID
				docs = append(docs, d.DocumentID)
			}
		} else {
			var one struct {
				BatchID string `json:"batch_id"`
			}
			_ = json.Unmarshal(body, &one)
			id = one.BatchID
		}
		if docs == nil {
			demostory.Printf("atlas: batch %s uploaded", id)
			return
		}
		demostory.Uploaded(id, docs)
		demostory.Printf("atlas: batch %s uploaded (%s: %s); its extracts are ready", id, documents(len(docs)), demostory.List(docs))

	case atlastest.APIPrefix + atlastest.EndpointExtracts:
		batch := r.URL.Query().Get("batch_id")
		if failed {
			demostory.Printf("atlas: extracts of %s refused (%d): %s", batch, status, apiError(body))
			return
		}
		var p struct {
			Data       []json.RawMessage `json:"data"`
			Page       int               `json:"page"`
			TotalPages int               `json:"total_pages"`
		}
		_ = json.Unmarshal(body, &p)
		demostory.Printf("atlas: extracts of %s sent, page %d of %d (%s)", batch, p.Page, p.TotalPages, documents(len(p.Data)))

	case atlastest.ControlPrefix + "callback":
		narrateCallback(status, body)
	}
}

// narrateCallback tells the outcome of POST /_sim/callback: how the
// gateway answered the callback, from the simulator's Delivery.
func narrateCallback(status int, body []byte) {
	var d struct {
		BatchID        string `json:"batch_id"`
		AuthStatus     int    `json:"auth_status"`
		CallbackStatus int    `json:"callback_status"`
		Error          string `json:"error"`
		Body           string `json:"body"`
	}
	if json.Unmarshal(body, &d) != nil || d.BatchID == "" {
		demostory.Printf("atlas: callback not sent (%d): %s", status, apiError(body))
		return
	}
	if d.Error != "" {
		how := d.Error
		if d.AuthStatus == http.StatusUnauthorized {
			how += " (the client_id or client_secret is not the callback block's)"
		}
		if d.CallbackStatus != 0 {
			if msg := apiError([]byte(d.Body)); msg != "" {
				how += ": " + msg
			}
		}
		demostory.Printf("atlas: callback for %s failed: %s", d.BatchID, how)
		return
	}
	var ack struct {
		Status     string `json:"status"`
		CallbackID string `json:"callback_id"`
		Duplicate  bool   `json:"duplicate"`
	}
	_ = json.Unmarshal([]byte(d.Body), &ack)
	switch {
	case ack.Status == "accepted" && ack.Duplicate:
		demostory.Printf("atlas: callback for %s answered %d by the gateway: a duplicate of %s, spooled before, not delivered again",
			d.BatchID, d.CallbackStatus, demostory.Short(ack.CallbackID))
	case ack.Status == "accepted":
		demostory.Printf("atlas: callback for %s answered %d by the gateway (spooled as %s)", d.BatchID, d.CallbackStatus, demostory.Short(ack.CallbackID))
	default:
		demostory.Printf("atlas: callback for %s answered %d by the gateway%s", d.BatchID, d.CallbackStatus, describe(d.Body))
	}
}

// describe is a short answer body in parentheses, or nothing.
func describe(body string) string {
	body = strings.TrimSpace(body)
	if body == "" || len(body) > 120 || strings.ContainsAny(body, "\n\r") {
		return ""
	}
	return " (" + body + ")"
}

// documents is "1 document" or "n documents".
func documents(n int) string {
	if n == 1 {
		return "1 document"
	}
	return fmt.Sprintf("%d documents", n)
}
