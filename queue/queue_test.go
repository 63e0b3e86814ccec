package queue

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckID(t *testing.T) {
	for _, id := range []string{"a", "0123456789abcdef0123456789abcdef", "A-b_c.d:e", strings.Repeat("x", MaxIDLen)} {
		if err := CheckID(id); err != nil {
			t.Errorf("CheckID(%q) = %v, want nil", id, err)
		}
	}
	for _, id := range []string{"", strings.Repeat("x", MaxIDLen+1), "a b", "a/b", "é", "a\n"} {
		if err := CheckID(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckID(%q) = %v, want ErrInvalid", id, err)
		}
	}
}

func TestStateText(t *testing.T) {
	for _, s := range []State{AnyState, StatePending, StateDead, StateDelivered} {
		b, err := s.MarshalText()
		if err != nil {
			t.Fatalf("%v.MarshalText: %v", s, err)
		}
		var got State
		if err := got.UnmarshalText(b); err != nil || got != s {
			t.Errorf("round trip of %v: got %v, %v", s, got, err)
		}
	}
	if _, err := State(9).MarshalText(); err == nil {
		t.Error("MarshalText of an unknown state: no error")
	}
	if _, err := ParseState("gone"); err == nil {
		t.Error(`ParseState("gone"): no error`)
	}
}

func TestErrFullIsUnavailable(t *testing.T) {
	if !errors.Is(ErrFull, ErrUnavailable) {
		t.Error("ErrFull does not match ErrUnavailable")
	}
}
