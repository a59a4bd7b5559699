package localpds

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Templates of the mails the PDS sends, as Mail.Template.
const (
	// MailPLCOperation carries the token of
	// com.atproto.identity.signPlcOperation
	// (com.atproto.identity.requestPlcOperationSignature).
	MailPLCOperation = "plcOperation"
	// MailDeleteAccount carries the token of com.atproto.server.deleteAccount
	// (com.atproto.server.requestAccountDelete).
	MailDeleteAccount = "deleteAccount"
)

// mailFile is the outbox start.mjs appends to, in the data dir.
const mailFile = "mail.jsonl"

// ErrNoMail is returned by EmailToken when the PDS sent no such mail.
var ErrNoMail = errors.New("localpds: no such mail")

// Mail is an email the PDS sent. The local PDS has no SMTP server: start.mjs
// appends every mail to <DataDir>/mail.jsonl (one JSON object a line) before
// the request that sent it returns, so a test reads the email tokens the
// account flows need (a PLC operation, an account deletion) from there.
type Mail struct {
	Time time.Time `json:"time"`
	// Template names the kind of mail: MailPLCOperation,
	// MailDeleteAccount, "confirmEmail", "updateEmail", "resetPassword".
	Template string `json:"template"`
	// To is the recipient, the account's email address.
	To      string `json:"to"`
	Subject string `json:"subject"`
	// Token is the email token the mail carries (xxxxx-xxxxx), if any. The
	// PDS keeps one token per account and purpose: a newer one replaces it.
	Token string `json:"token,omitempty"`
}

// Mails returns every mail the PDS sent since its data dir was created,
// oldest first.
func (p *PDS) Mails() ([]Mail, error) {
	b, err := os.ReadFile(filepath.Join(p.DataDir, mailFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("localpds: mails: %w", err)
	}
	// A line without its newline is still being written: skip it.
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		b = nil
	}
	var out []Mail
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m Mail
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("localpds: mails: %s line %d: %w", mailFile, len(out)+1, err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("localpds: mails: %w", err)
	}
	return out, nil
}

// EmailToken returns the token of the newest mail of template sent to the
// address to (ErrNoMail if there is none), which is the token the PDS
// accepts as long as no newer mail of the kind was sent.
func (p *PDS) EmailToken(to, template string) (string, error) {
	mails, err := p.Mails()
	if err != nil {
		return "", err
	}
	for i := len(mails) - 1; i >= 0; i-- {
		if m := mails[i]; m.To == to && m.Template == template && m.Token != "" {
			return m.Token, nil
		}
	}
	return "", fmt.Errorf("%w: %s to %s in %s", ErrNoMail, template, to, filepath.Join(p.DataDir, mailFile))
}
