package localpds

import (
	"context"
	"errors"
	"fmt"
)

// lxmCreateAccount is the method a migration's service-auth token is for.
const lxmCreateAccount = "com.atproto.server.createAccount"

// Migrate moves the account of sess from the PDS from to the PDS to, which
// must share from's PLC directory (Options.SharePLC), the way the atproto
// account-migration flow does it with the reference PDS, and returns the
// account's session on to. password becomes the account's password on to
// (pass the one it has on from to keep it); the handle and email stay.
//
// The steps, in order (F = from, T = to):
//
//  1. F getSession: the handle and email.
//  2. F getServiceAuth(aud = T's service DID, lxm = createAccount).
//  3. T createAccount(did, handle, email, password) with that token: the
//     account is created deactivated, with an empty repo and a new signing
//     key; no event.
//  4. F getRepo, T importRepo: the records, indexed on T; no event.
//  5. Blobs: for each of T listMissingBlobs, F getBlob, T uploadBlob.
//     Preferences (app.bsky.actor.*) are not copied.
//  6. T getRecommendedDidCredentials: T's rotation keys, T's signing key for
//     the account, T's public URL.
//  7. F requestPlcOperationSignature: the PDS mails a token, which is read
//     from F's mail outbox (PDS.EmailToken).
//  8. F signPlcOperation(token, T's credentials): F signs, with its
//     rotation key, a PLC update that hands the DID over to T.
//  9. T submitPlcOperation: the DID document now points at T; T emits
//     #identity although the account is still deactivated there.
//  10. T activateAccount (T requires the DID document to point at it with
//     its signing key): T emits #account active, #identity and #sync.
//  11. F deactivateAccount: F emits #account active=false
//     status=deactivated. The account stays on F until PDS.DeleteAccount
//     (or the admin Client.DeleteAccount) on F.
//
// A test that needs another order (say, writes on F after the PLC update, or
// no deactivation on F) can run the same steps itself with the Client
// methods named above. On an error, Migrate stops where it is: the account
// may then exist, deactivated, on to.
func Migrate(ctx context.Context, from, to *PDS, sess Session, password string) (Session, error) {
	if from.PLCURL != to.PLCURL {
		return Session{}, fmt.Errorf("localpds: migrate %s: %s and %s use different PLC directories (%s, %s); start one with Options.SharePLC",
			sess.DID, from.URL, to.URL, from.PLCURL, to.PLCURL)
	}
	fc, tc := from.Client(), to.Client()
	wrap := func(step string, err error) (Session, error) {
		return Session{}, fmt.Errorf("localpds: migrate %s from %s to %s: %s: %w", sess.DID, from.URL, to.URL, step, err)
	}

	info, err := fc.GetSession(ctx, sess)
	if err != nil {
		return wrap("source account", err)
	}
	if info.Email == "" {
		return wrap("source account", errors.New("no email address: the PLC operation token cannot be mailed"))
	}
	auth, err := fc.GetServiceAuth(ctx, sess, to.ServiceDID, lxmCreateAccount)
	if err != nil {
		return wrap("service auth", err)
	}
	newSess, err := tc.CreateAccountForDID(ctx, sess.DID, info.Handle, info.Email, password, auth)
	if err != nil {
		return wrap("create account", err)
	}

	car, err := fc.GetRepo(ctx, sess.DID)
	if err != nil {
		return wrap("export repo", err)
	}
	if err := tc.ImportRepo(ctx, newSess, car); err != nil {
		return wrap("import repo", err)
	}
	if err := copyBlobs(ctx, fc, tc, newSess); err != nil {
		return wrap("blobs", err)
	}

	creds, err := tc.GetRecommendedDIDCredentials(ctx, newSess)
	if err != nil {
		return wrap("recommended credentials", err)
	}
	if err := fc.RequestPLCOperationSignature(ctx, sess); err != nil {
		return wrap("plc token", err)
	}
	token, err := from.EmailToken(info.Email, MailPLCOperation)
	if err != nil {
		return wrap("plc token", err)
	}
	op, err := fc.SignPLCOperation(ctx, sess, token, creds)
	if err != nil {
		return wrap("sign plc operation", err)
	}
	if err := tc.SubmitPLCOperation(ctx, newSess, op); err != nil {
		return wrap("submit plc operation", err)
	}

	if err := tc.ActivateAccount(ctx, newSess); err != nil {
		return wrap("activate", err)
	}
	if err := fc.DeactivateAccount(ctx, sess); err != nil {
		return wrap("deactivate source", err)
	}
	return newSess, nil
}

// copyBlobs uploads to the new PDS every blob its imported records refer to.
func copyBlobs(ctx context.Context, fc, tc *Client, newSess Session) error {
	missing, err := tc.ListMissingBlobs(ctx, newSess)
	if err != nil {
		return err
	}
	for _, b := range missing {
		data, mimeType, err := fc.GetBlob(ctx, newSess.DID, b.CID)
		if err != nil {
			return err
		}
		if mimeType == "" {
			mimeType = "application/octet-stream"
		}
		if _, err := tc.UploadBlob(ctx, newSess, mimeType, data); err != nil {
			return fmt.Errorf("blob %s of %s: %w", b.CID, b.RecordURI, err)
		}
	}
	left, err := tc.ListMissingBlobs(ctx, newSess)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("%d blobs still missing after the copy, first %s of %s", len(left), left[0].CID, left[0].RecordURI)
	}
	return nil
}

// DeleteAccount deletes the session's account from p the way its owner
// does: requestAccountDelete, the token from p's mail outbox, then
// com.atproto.server.deleteAccount with the password. It works on a
// deactivated account (the old copy after Migrate). p emits #account
// active=false status=deleted and purges the DID's earlier events from its
// firehose replay. (Client.DeleteAccount is the admin way, same events.)
func (p *PDS) DeleteAccount(ctx context.Context, sess Session, password string) error {
	c := p.Client()
	info, err := c.GetSession(ctx, sess)
	if err != nil {
		return fmt.Errorf("localpds: delete account %s: %w", sess.DID, err)
	}
	if err := c.RequestAccountDelete(ctx, sess); err != nil {
		return err
	}
	token, err := p.EmailToken(info.Email, MailDeleteAccount)
	if err != nil {
		return fmt.Errorf("localpds: delete account %s: %w", sess.DID, err)
	}
	return c.DeleteAccountWithToken(ctx, sess.DID, password, token)
}
