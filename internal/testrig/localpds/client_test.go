package localpds

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
)

// TestClientNoPDS checks request and response handling against a fake PDS.
func TestClientNoPDS(t *testing.T) {
	var gotAuth, gotBody string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		b, _ := io.ReadAll(r.Body)
		gotBody = string(b)
		switch r.URL.Path {
		case "/xrpc/com.atproto.repo.createRecord":
			_, _ = io.WriteString(w, `{"uri":"at://did:plc:x/c.o.l/r","cid":"bafyrec","commit":{"cid":"bafycommit","rev":"3rev"},"validationStatus":"unknown"}`)
		case "/xrpc/com.atproto.repo.putRecord":
			_, _ = io.WriteString(w, `{"uri":"at://did:plc:x/c.o.l/r","cid":"bafyrec"}`)
		case "/xrpc/com.atproto.repo.deleteRecord":
			_, _ = io.WriteString(w, `{}`)
		case "/xrpc/com.atproto.repo.listRecords":
			if r.URL.Query().Get("cursor") == "" {
				_, _ = io.WriteString(w, `{"records":[{"uri":"at://a/c/1","cid":"c1","value":{}}],"cursor":"1"}`)
			} else {
				_, _ = io.WriteString(w, `{"records":[],"cursor":"1"}`)
			}
		case "/xrpc/com.atproto.admin.updateSubjectStatus":
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"AuthenticationRequired","message":"Authentication Required"}`)
		default:
			http.Error(w, "not here", http.StatusNotFound)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	c := &Client{BaseURL: srv.URL}
	sess := Session{DID: "did:plc:x", AccessJwt: "tok"}

	ref, err := c.CreateRecord(ctx, sess, "c.o.l", "r", map[string]any{"a": 1})
	if err != nil {
		t.Fatal(err)
	}
	want := RecordRef{URI: "at://did:plc:x/c.o.l/r", CID: "bafyrec", Rev: "3rev", CommitCID: "bafycommit", ValidationStatus: "unknown"}
	if ref != want || gotAuth != "Bearer tok" {
		t.Fatalf("createRecord = %+v (auth %q), want %+v", ref, gotAuth, want)
	}
	var in map[string]any
	if err := json.Unmarshal([]byte(gotBody), &in); err != nil || in["repo"] != "did:plc:x" || in["rkey"] != "r" {
		t.Fatalf("createRecord body %s", gotBody)
	}
	if ref, err := c.PutRecord(ctx, sess, "c.o.l", "r", nil); err != nil || ref.Rev != "" {
		t.Fatalf("no-op putRecord = %+v, %v", ref, err)
	}
	if rev, err := c.DeleteRecord(ctx, sess, "c.o.l", "r"); err != nil || rev != "" {
		t.Fatalf("no-op deleteRecord = %q, %v", rev, err)
	}
	recs, err := c.ListAllRecords(ctx, "did:plc:x", "c.o.l")
	if err != nil || len(recs) != 1 {
		t.Fatalf("listAllRecords = %v, %v", recs, err)
	}

	err = c.Takedown(ctx, "pw", "did:plc:x", true)
	var xe *XRPCError
	if !errors.As(err, &xe) || *xe != (XRPCError{NSID: "com.atproto.admin.updateSubjectStatus", Status: 401, Name: "AuthenticationRequired", Message: "Authentication Required"}) {
		t.Fatalf("takedown error = %#v", err)
	}
	if gotAuth != "Basic YWRtaW46cHc=" { // admin:pw
		t.Fatalf("admin auth = %q", gotAuth)
	}
	if err := json.Unmarshal([]byte(gotBody), &in); err != nil || !reflect.DeepEqual(in["subject"], map[string]any{"$type": "com.atproto.admin.defs#repoRef", "did": "did:plc:x"}) {
		t.Fatalf("takedown body %s", gotBody)
	}
	_, _, err = c.GetLatestCommit(ctx, "did:plc:x")
	if !errors.As(err, &xe) || xe.Status != 404 || xe.Name != "Not Found" {
		t.Fatalf("non-XRPC error = %#v", err)
	}
	t.Log(err)
}

func TestLineWriter(t *testing.T) {
	var lines []string
	w := &lineWriter{fn: func(b []byte) { lines = append(lines, string(b)) }}
	for _, s := range []string{"a", "b\nc\n", "d\n\ne"} {
		_, _ = w.Write([]byte(s))
	}
	if want := []string{"ab", "c", "d", ""}; !reflect.DeepEqual(lines, want) {
		t.Fatalf("lines = %q, want %q", lines, want)
	}
}
