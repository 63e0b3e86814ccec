package caddyatlas

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/atlasclient"
	"github.com/caddy-atlas/caddy-atlas/ledger"
)

// maxUploadAnswer bounds the multiupload answer the gateway reads to
// record the batch: one small object per document.
const maxUploadAnswer = 4 << 20

// serveRecordedUpload is the upload route with a ledger of batches: an
// upload that Atlas accepts is recorded before its answer goes back to
// the app, and an Idempotency-Key makes a repeat get the first answer
// without calling Atlas again (which bills per document).
func (h *Handler) serveRecordedUpload(w http.ResponseWriter, r *http.Request, body []byte, up validatedUpload) error {
	store := h.app.waitLedger(r.Context())
	if store == nil {
		w.Header().Set("Retry-After", "1")
		return writeError(w, http.StatusServiceUnavailable, "the ledger of batches is not open yet; retry in a moment")
	}
	key := r.Header.Get("Idempotency-Key")
	var token string
	if key != "" {
		if len(key) > 255 || strings.ContainsFunc(key, func(c rune) bool { return c < 0x20 || c > 0x7e }) {
			return writeError(w, http.StatusBadRequest, "Idempotency-Key must be 1 to 255 printable ASCII characters")
		}
		sum := sha256.Sum256(append([]byte(h.clientID+"\x00"), body...))
		res, err := store.Begin(r.Context(), h.idemKey(key), hex.EncodeToString(sum[:]))
		if err != nil {
			return h.ledgerError(w, r, err)
		}
		switch res.Outcome {
		case ledger.IdemInFlight:
			w.Header().Set("Retry-After", "1")
			return writeError(w, http.StatusConflict, "an upload with this Idempotency-Key is in progress; retry once it is answered")
		case ledger.IdemMismatch:
			return writeError(w, http.StatusUnprocessableEntity, "this Idempotency-Key was used with another body")
		case ledger.IdemDone:
			hdr := w.Header()
			if res.Answer.ContentType != "" {
				hdr.Set("Content-Type", res.Answer.ContentType)
			}
			hdr.Set("Cache-Control", "no-store")
			hdr.Set("Idempotent-Replayed", "true")
			w.WriteHeader(res.Answer.Status)
			_, _ = w.Write(res.Answer.Body)
			return nil
		}
		token = res.Token
	}
	abandon := func() {
		if token != "" {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
			defer cancel()
			if err := store.Abandon(ctx, h.idemKey(key), token); err != nil {
				h.logger.Warn("releasing an Idempotency-Key", zap.Error(err))
			}
		}
	}

	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(h.Timeout))
	defer cancel()
	u := h.endpoint.JoinPath(h.service.upload)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		abandon()
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := h.exchange(ctx, r, routeUpload, req)
	if err != nil {
		if notSent(err) {
			abandon()
		}
		// Otherwise Atlas may have accepted the upload: the key stays in
		// flight (a repeat gets 409) until the ledger's in-flight
		// timeout, rather than a repeat uploading, and billing, twice.
		return h.writeExchangeError(ctx, w, r, err)
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxUploadAnswer+1))
	resp.Body.Close()
	if err != nil || len(answer) > maxUploadAnswer {
		// The key stays in flight: Atlas may have accepted the upload.
		if err == nil {
			err = errors.New("the answer is larger than 4 MiB")
		}
		h.logger.Error("reading atlas's multiupload answer", zap.Error(err))
		return writeError(w, http.StatusBadGateway, "atlas's answer to the upload could not be read; the upload may have been accepted: check before sending it again")
	}
	if resp.StatusCode/100 == 2 {
		h.recordUpload(r.Context(), store, key, up, answer)
	}
	if token != "" {
		if !repeatable(resp.StatusCode) {
			abandon()
		} else {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
			a := ledger.Answer{Status: resp.StatusCode, ContentType: resp.Header.Get("Content-Type"), Body: answer}
			if err := store.Finish(ctx, h.idemKey(key), token, a); err != nil {
				h.logger.Warn("storing the answer of an Idempotency-Key", zap.Error(err))
			}
			cancel()
		}
	}
	hdr := w.Header()
	for _, name := range []string{"Content-Type", "Retry-After", "X-Request-Id"} {
		if v := resp.Header[name]; len(v) > 0 {
			hdr[name] = v
		}
	}
	hdr.Set("Cache-Control", "no-store")
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
	return nil
}

// uploadAnswerItem is one element of Atlas's multiupload answer (an
// array of them, or one object with a batch_id).
type uploadAnswerItem struct {
	BatchID    string `json:"batch_id"`
	DocumentID string `json:"document_id"`
	FileUUID   string `json:"file_uuid"`
}

// recordUpload records the batch Atlas accepted: its id, each document
// id (and file_uuid when Atlas gave one), the product_type and the
// Idempotency-Key; never a file URL. A failure is logged and counted:
// the upload was accepted, and its answer still goes to the app.
func (h *Handler) recordUpload(ctx context.Context, store ledger.Store, key string, up validatedUpload, answer []byte) {
	var items []uploadAnswerItem
	if err := json.Unmarshal(answer, &items); err != nil {
		var one uploadAnswerItem
		if err := json.Unmarshal(answer, &one); err != nil || one.BatchID == "" {
			h.logger.Error("atlas accepted an upload with an answer that names no batch: it is not recorded", zap.Int("bytes", len(answer)))
			return
		}
		for _, id := range up.DocumentIDs {
			items = append(items, uploadAnswerItem{BatchID: one.BatchID, DocumentID: id})
		}
	}
	batches := map[string]*ledger.Batch{}
	var order []string
	for _, it := range items {
		if it.BatchID == "" || it.DocumentID == "" {
			continue
		}
		b := batches[it.BatchID]
		if b == nil {
			b = &ledger.Batch{ID: it.BatchID, ProductType: up.ProductType, IdempotencyKey: key}
			batches[it.BatchID] = b
			order = append(order, it.BatchID)
		}
		b.Documents = append(b.Documents, ledger.Document{ID: it.DocumentID, FileUUID: it.FileUUID})
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, id := range order {
		if _, err := store.Create(ctx, batches[id]); err != nil && !errors.Is(err, ledger.ErrExists) {
			h.logger.Error("recording an accepted upload in the ledger of batches failed: the batch will not be followed",
				zap.String("batch_id", id), zap.Error(err))
		}
	}
}

// idemKey is the ledger's key of an Idempotency-Key: scoped to the
// account, of a fixed length whatever the key's.
func (h *Handler) idemKey(key string) string {
	sum := sha256.Sum256([]byte(h.clientID + "\x00" + key))
	return hex.EncodeToString(sum[:])
}

// repeatable reports whether an upload's answer is stored for the
// repeats of its Idempotency-Key: a success, or a refusal that a repeat
// would get again; not one that asks to try again later (401 and 403 of
// the gateway's token, 408, 425, 429, 5xx), which frees the key.
func repeatable(status int) bool {
	switch {
	case status >= 500:
		return false
	case status == http.StatusUnauthorized, status == http.StatusForbidden, status == http.StatusRequestTimeout,
		status == http.StatusTooEarly, status == http.StatusTooManyRequests:
		return false
	}
	return true
}

// notSent reports whether an exchange failed before its request could
// reach Atlas: no connection, or no token.
func notSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var creds *atlasclient.CredentialsError
	return errors.As(err, &creds) || errors.Is(err, errTokenRefused)
}

// ledgerError answers a failure of the ledger.
func (h *Handler) ledgerError(w http.ResponseWriter, r *http.Request, err error) error {
	if r.Context().Err() != nil {
		return nil
	}
	if errors.Is(err, ledger.ErrInvalid) {
		return writeError(w, http.StatusBadRequest, "the Idempotency-Key is not one the gateway takes")
	}
	h.logger.Error("ledger of batches", zap.Error(err))
	w.Header().Set("Retry-After", "1")
	return writeError(w, http.StatusServiceUnavailable, "the ledger of batches cannot be read right now; retry in a moment")
}
