//go:build !crashpoints

package crashpoint

// Enabled reports whether this build can crash on purpose.
const Enabled = false

// Hit does nothing in a release build.
func Hit(string) {}
