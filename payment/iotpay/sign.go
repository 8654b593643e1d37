// Package iotpay is the client for IOTPay's Merchant Scan Barcode API:
// request signing and encoding, create_order, query_order and refund_order,
// tolerant reply parsing, and the classification of every reply into an
// Outcome the sale engine can branch on without matching strings.
//
// The client never re-sends create_order: a lost or unreadable reply is
// reported as OutcomeUnknown and the caller resolves the order by query.
package iotpay

import (
	"crypto/md5"
	"crypto/subtle"
	"encoding/hex"
	"sort"
	"strings"
)

// Sign computes IOTPay's request/reply signature over fields: empty values
// and "sign" are dropped, names are sorted in byte order, joined as
// name=value with raw values, "&key=KEY" is appended, and the MD5 digest is
// returned as 32 upper-case hex characters.
func Sign(fields map[string]string, key string) string {
	names := make([]string, 0, len(fields))
	size := len("&key=") + len(key)
	for name, value := range fields {
		if name == "sign" || value == "" {
			continue
		}
		names = append(names, name)
		size += len(name) + len(value) + 2
	}
	sort.Strings(names)
	var b strings.Builder
	b.Grow(size)
	for i, name := range names {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(fields[name])
	}
	b.WriteString("&key=")
	b.WriteString(key)
	sum := md5.Sum([]byte(b.String()))
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// Verify reports whether sign is the signature of fields under key. The
// comparison is constant-time and case-insensitive on the hex digits.
func Verify(fields map[string]string, key, sign string) bool {
	want := Sign(fields, key)
	got := strings.ToUpper(sign)
	return len(got) == len(want) && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// MaskCode shortens a payment code for logs and screens: at most the first 2
// and last 4 characters survive. Codes of 8 characters or fewer keep only
// their last 2, so a short code is never shown nearly whole.
func MaskCode(code string) string {
	n := len(code)
	switch {
	case n == 0:
		return ""
	case n <= 8:
		if n <= 2 {
			return strings.Repeat("*", n)
		}
		return strings.Repeat("*", n-2) + code[n-2:]
	default:
		return code[:2] + strings.Repeat("*", n-6) + code[n-4:]
	}
}
