package redact_test

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strings"
	"testing"

	"github.com/spaces-authz/spaces-authz/internal/redact"
)

func TestString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"https://pds.example.com", "https://pds.example.com"},
		{"https://alice:hunter2@pds.example.com/xrpc", "https://REDACTED@pds.example.com/xrpc"},
		{"wss://tok@pds:443", "wss://REDACTED@pds:443"},
		{"nats://u:p@a:4222,nats://v:q@b:4222", "nats://REDACTED@a:4222,nats://REDACTED@b:4222"},
		{"nats://a:4222,nats://v:q@b:4222", "nats://a:4222,nats://REDACTED@b:4222"},
		{`dial "http://u:p@ss@h:1/x?cursor=3": refused`, `dial "http://REDACTED@h:1/x?cursor=3": refused`},
		{`parse "nats://user:hunter2@127.0.0.1:notaport": invalid port`, `parse "nats://REDACTED@127.0.0.1:notaport": invalid port`},
		{"GET https://h/x?cursor=1&access_token=abc&b=2", "GET https://h/x?cursor=1&access_token=REDACTED&b=2"},
		{"https://h/x?Password=abc#frag", "https://h/x?Password=REDACTED#frag"},
		{"mail alice@example.com about http://h/a@b", "mail alice@example.com about http://h/a@b"},
		{"no url here", "no url here"},
		{"", ""},
	} {
		if got := redact.String(tc.in); got != tc.want {
			t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestError(t *testing.T) {
	t.Parallel()
	if redact.Error(nil) != nil {
		t.Fatal("Error(nil) is not nil")
	}
	// What url.Parse returns for a bad port: the URL, password included.
	perr := &url.Error{Op: "parse", URL: "nats://user:hunter2@127.0.0.1:notaport", Err: errors.New(`invalid port ":notaport" after host`)}
	err := redact.Error(fmt.Errorf("connect: %w: %w", perr, fs.ErrNotExist))
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("not redacted: %v", err)
	}
	var ue *url.Error
	if !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &ue) {
		t.Fatalf("the chain is lost: %v", err)
	}
}

// FuzzString: no input keeps a URL's password once redacted.
func FuzzString(f *testing.F) {
	for _, s := range []string{"https://u:p@h/", "x nats://a:b@c,nats://d:e@f y", `"ws://u:p@ss@h:1"`} {
		f.Add(s, "hunter2secret")
	}
	f.Fuzz(func(t *testing.T, text, password string) {
		if password == "" || strings.ContainsAny(password, "/?#@ \t\r\n\v\f\"'<>`") {
			return
		}
		in := text + " https://user:" + password + "@host/ " + text
		if out := redact.String(in); strings.Contains(out, "user:"+password+"@") {
			t.Fatalf("String(%q) = %q keeps the password", in, out)
		}
	})
}
