package view

// Change is one record operation the engine applied (or skipped as a
// duplicate, or rejected), as it is fanned out. Everything in it is a pure
// function of the event and the rules, so a re-publish after a crash is
// identical where it matters.
type Change struct {
	Seq        int64
	OpIndex    int
	DID        string
	Rev        string
	Time       string
	Collection string
	RKey       string
	Action     string
	CID        string
	Record     map[string]any
	// Produces are the tuples the record produces under the rules.
	Produces []Tuple
	// Rejected is the reason the record was rejected ("" when it wasn't);
	// RejectDetail says more, without the record body.
	Rejected     Reason
	RejectDetail string
	// Projected reports whether the collection is projected at all (raw
	// mode also publishes other collections).
	Projected bool
	// Duplicate: the commit was already applied; SpiceDB was not written.
	Duplicate bool
	// Resync: the change was found by a repo resync, not carried by the
	// stream event (Seq is the event that triggered the resync, or 0).
	Resync bool
}
