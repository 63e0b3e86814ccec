package queues

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddy-atlas/caddy-atlas/jsqueue"
)

func TestJetStreamOptions(t *testing.T) {
	dir := t.TempDir()
	creds := "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.sig\n------END NATS USER JWT------\n"
	t.Setenv("JS_TEST_CREDS", creds)
	t.Setenv("JS_TEST_URLS", "nats://a:4222 nats://b:4222")

	o, err := (&JetStream{URLs: []string{"{env.JS_TEST_URLS}", "nats://c:4222"}, Replicas: 3,
		Credentials: &JetStreamCredentials{Creds: "{env.JS_TEST_CREDS}"}}).options()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.URLs, " ") != "nats://a:4222 nats://b:4222 nats://c:4222" || o.Replicas != 3 {
		t.Errorf("options = %+v", o)
	}
	if o.Credentials != creds || o.CredentialsFile != "" {
		t.Error("the creds content was not taken as content")
	}
	o, _ = (&JetStream{URLs: []string{"nats://a:4222"}, Credentials: &JetStreamCredentials{Creds: "/etc/caddy/atlas.creds"}}).options()
	if o.CredentialsFile != "/etc/caddy/atlas.creds" || o.Credentials != "" {
		t.Error("a creds path was not taken as a path")
	}
	a := jsqueue.Options{URLs: []string{"nats://a:4222", "nats://b:4222"}}
	b := jsqueue.Options{URLs: []string{"nats://b:4222", "nats://a:4222"}, Stream: jsqueue.DefaultStream}
	if jetStreamKey(a) != jetStreamKey(b) {
		t.Errorf("the same stream on the same servers has two keys: %q, %q", jetStreamKey(a), jetStreamKey(b))
	}

	pem := filepath.Join(dir, "ca.pem")
	os.WriteFile(pem, []byte("not a certificate"), 0o600)
	for _, c := range []struct {
		js   JetStream
		want string
	}{
		{JetStream{}, "url is required"},
		{JetStream{URLs: []string{"{env.JS_TEST_UNSET}"}}, "queue jetstream: url {env.JS_TEST_UNSET} is empty: JS_TEST_UNSET is not set"},
		{JetStream{URLs: []string{"http://a:4222"}}, "not a nats://"},
		{JetStream{URLs: []string{"nats://user:pass@a:4222"}}, "not in the URL"},
		{JetStream{URLs: []string{"http://user:pass@a:4222"}}, "not in the URL"},
		{JetStream{URLs: []string{"nats://user:pass@a:4222/%zz"}}, "url 1 is not"},
		{JetStream{URLs: []string{"nats://a:4222"}, Replicas: 7}, "replicas"},
		{JetStream{URLs: []string{"nats://a:4222"}, Credentials: &JetStreamCredentials{Creds: "{env.JS_TEST_UNSET}"}}, "queue jetstream: credentials creds {env.JS_TEST_UNSET} is empty: JS_TEST_UNSET is not set"},
		{JetStream{URLs: []string{"nats://a:4222"}, TLS: &JetStreamTLS{Cert: "c.pem"}}, "both cert and key"},
		{JetStream{URLs: []string{"nats://a:4222"}, TLS: &JetStreamTLS{CA: pem}}, "no PEM certificate"},
		{JetStream{URLs: []string{"nats://a:4222"}, TLS: &JetStreamTLS{CA: filepath.Join(dir, "missing.pem")}}, "tls ca"},
	} {
		_, err := c.js.options()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("options(%+v) = %v, want an error with %q", c.js, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "pass") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}
