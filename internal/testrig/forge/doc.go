// Package forge alters real #commit frames the way a hostile relay could:
// one record's value is changed and the commit re-signed with another key,
// with the MST, the CAR and the op list kept consistent (the op's CID is
// the new record's, the tree holds it, prevData still inverts), so that
// only the signature gives the forgery away. Tests use it to check that a
// verifying consumer refuses such commits, and an e2e websocket proxy in
// front of a real relay can use it on live frames.
//
// It is test code: it trusts its input (a frame that decodes) and reports
// errors rather than guessing.
package forge
