package firehose

import (
	"testing"
	"time"

	"github.com/spaces-authz/spaces-authz/checkpoint"
)

func TestLagOf(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	week := 7 * 24 * time.Hour
	for _, tc := range []struct {
		name   string
		in     lagInput
		events int64
		secs   float64
	}{
		{"caught up, idle PDS for a week: 0, not the time since the last post",
			lagInput{head: 10, watermark: 10, applied: ago(week), connected: true, since: ago(week), lastFrame: ago(week)}, 0, 0},
		{"caught up with the stream, but a rebuild of an incomplete view runs: its age",
			lagInput{head: 10, watermark: 10, applied: ago(week), connected: true, since: ago(week), lastFrame: ago(week),
				stale: ago(5 * time.Minute)}, 0, 300},
		{"a rebuild that started after the view fell behind does not hide the older lag",
			lagInput{head: 15, watermark: 10, applied: ago(40 * time.Second), pending: ago(30 * time.Second), connected: true,
				since: ago(time.Hour), lastFrame: now, stale: ago(10 * time.Second)}, 5, 30},
		{"caught up, quiet for the quiet period",
			lagInput{head: 10, watermark: 10, applied: ago(3 * time.Second), connected: true, since: ago(time.Hour),
				lastFrame: ago(QuietPeriod)}, 0, 0},
		{"caught up with what was read, frames still streaming (a backlog): newest applied event's age",
			lagInput{head: 10, watermark: 10, applied: ago(90 * time.Second), connected: true, since: ago(time.Hour),
				lastFrame: ago(10 * time.Millisecond)}, 0, 90},
		{"events in flight: the oldest unapplied event's age",
			lagInput{head: 15, watermark: 10, applied: ago(40 * time.Second), pending: ago(30 * time.Second), connected: true,
				since: ago(time.Hour), lastFrame: now}, 5, 30},
		{"one event after a week of silence: its own age, not a week",
			lagInput{head: 11, watermark: 10, applied: ago(week), pending: ago(50 * time.Millisecond), connected: true,
				since: ago(week), lastFrame: now}, 1, 0.05},
		{"disconnected while caught up: grows from the disconnection",
			lagInput{head: 10, watermark: 10, applied: ago(week), connected: false, since: ago(20 * time.Second),
				lastFrame: ago(time.Hour)}, 0, 20},
		{"disconnected while behind: the older of the two",
			lagInput{head: 15, watermark: 10, applied: ago(3 * time.Minute), pending: ago(2 * time.Minute), connected: false,
				since: ago(20 * time.Second), lastFrame: ago(21 * time.Second)}, 5, 120},
		{"disconnected in the middle of a backlog: the newest applied event's age",
			lagInput{head: 10, watermark: 10, applied: ago(5 * time.Minute), connected: false, since: ago(time.Second),
				lastFrame: ago(time.Second + time.Millisecond)}, 0, 300},
		{"never connected: grows from the start",
			lagInput{head: checkpoint.None, watermark: 10, connected: false, since: ago(45 * time.Second)}, 0, 45},
		{"a new run from the stored cursor, not yet read again: from the reconnection",
			lagInput{head: 20, watermark: 12, applied: ago(week), connected: true, since: ago(3 * time.Second),
				lastFrame: ago(time.Minute)}, 8, 3},
		{"no watermark yet (first run): events unknown",
			lagInput{head: 20, watermark: checkpoint.None, pending: ago(time.Second), connected: true, since: ago(time.Minute),
				lastFrame: now}, 0, 1},
		{"a link up for less than the quiet period without a frame: as if still down",
			lagInput{head: 10, watermark: 10, applied: ago(week), connected: true, since: ago(time.Second), upAt: ago(time.Second),
				down: ago(time.Minute), lastFrame: ago(time.Hour)}, 0, 60},
		{"down again after such a link: from the outage's start, not the last drop",
			lagInput{head: 10, watermark: 10, applied: ago(week), connected: false, since: ago(time.Second),
				upAt: ago(1100 * time.Millisecond), down: ago(time.Minute), lastFrame: ago(time.Hour)}, 0, 60},
		{"PDS clock ahead: never negative",
			lagInput{head: 11, watermark: 10, pending: now.Add(time.Minute), connected: true, since: ago(time.Hour), lastFrame: now}, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := lagOf(tc.in, now)
			if l.Events != tc.events || l.Seconds != tc.secs {
				t.Fatalf("lag %d events, %vs; want %d, %vs", l.Events, l.Seconds, tc.events, tc.secs)
			}
		})
	}
}
