package firehose

import (
	"errors"
	"fmt"
)

// Bad-input reasons: the bounded label values of the bad frame and bad op
// counters. Op reasons match the projector's rejection reasons.
const (
	// Frame reasons: the frame is skipped.
	ReasonMalformedFrame = "malformed_frame"
	ReasonUnknownType    = "unknown_type"
	ReasonOversized      = "oversized"
	ReasonTextFrame      = "text_frame"
	ReasonInvalidDID     = "invalid_did"
	// Op reasons: the op is dropped (bad_path, bad_action: see
	// Event.Malformed) or its record is not read (the others: see Op.Err).
	ReasonBadPath      = "bad_path"
	ReasonBadAction    = "bad_action"
	ReasonBadCAR       = "bad_car"
	ReasonMissingBlock = "missing_block"
	ReasonCIDMismatch  = "cid_mismatch"
	ReasonMalformedRec = "malformed_record"
)

// OpError says why an op could not be read: its path or action (a dropped
// op), or its record (Op.Err).
type OpError struct {
	Reason string
	Detail string
}

func (e *OpError) Error() string { return e.Reason + ": " + e.Detail }

// StreamError is an error frame sent by the PDS.
type StreamError struct {
	Name    string
	Message string
}

func (e *StreamError) Error() string {
	return fmt.Sprintf("firehose: PDS sent error frame %s: %s", e.Name, e.Message)
}

// ErrFutureCursor is returned (wrapped) by Client.Run when the PDS says the
// cursor is ahead of its newest event. It is fatal: the stored cursor does not
// belong to this PDS (a different or reset PDS), and resuming from anywhere
// else could skip or replay events.
var ErrFutureCursor = errors.New("cursor is ahead of the PDS's newest event (FutureCursor): " +
	"the stored cursor does not belong to this PDS or the PDS lost data; " +
	"check --pds-url, then rebuild the view (consumer rebuild) or rewind the cursor (consumer rewind --to SEQ)")

// XRPCError is a non-2xx answer from an XRPC endpoint.
type XRPCError struct {
	Status  int
	Name    string
	Message string
}

func (e *XRPCError) Error() string {
	return fmt.Sprintf("xrpc status %d: %s: %s", e.Status, e.Name, e.Message)
}

// Temporary reports whether retrying may help (5xx, 429).
func (e *XRPCError) Temporary() bool { return e.Status >= 500 || e.Status == 429 }
