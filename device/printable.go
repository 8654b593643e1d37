package device

import "strings"

// Printable returns s without control bytes, so that what a device sent is
// safe to log.
func Printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}
