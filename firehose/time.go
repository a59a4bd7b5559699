package firehose

import "time"

// parseTime reads an event's `time` field.
func parseTime(s string) (time.Time, bool) {
	if s == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}

// EventTime parses an event's `time` field; ok is false when absent or bad.
func EventTime(ev *Event) (time.Time, bool) { return parseTime(ev.Time) }
