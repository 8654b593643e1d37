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
	"slices"
	"strings"
)

// Sign computes IOTPay's request/reply signature over fields: empty values
// and "sign" are dropped, names are sorted in byte order, joined as
// name=value with raw values, "&key=KEY" is appended, and the MD5 digest is
// returned as 32 upper-case hex characters.
func Sign(fields map[string]string, key string) string {
	var arr [32]field // on the stack for a usual reply
	sorted := arr[:0]
	for name, value := range fields {
		if name == "sign" || value == "" {
			continue
		}
		sorted = append(sorted, field{name: name, value: value})
	}
	slices.SortFunc(sorted, func(a, b field) int { return strings.Compare(a.name, b.name) })
	return signSorted(sorted, key)
}

// signSorted is Sign over fields already sorted by name, without "sign"
// or empty values.
func signSorted(sorted []field, key string) string {
	size := len("&key=") + len(key)
	for _, f := range sorted {
		size += len(f.name) + len(f.value) + 2
	}
	var arr [1024]byte // on the stack for a usual request or reply
	b := arr[:0]
	if size > len(arr) {
		b = make([]byte, 0, size)
	}
	for i, f := range sorted {
		if i > 0 {
			b = append(b, '&')
		}
		b = append(b, f.name...)
		b = append(b, '=')
		b = append(b, f.value...)
	}
	b = append(b, "&key="...)
	b = append(b, key...)
	sum := md5.Sum(b)
	var out [2 * md5.Size]byte
	const upperHex = "0123456789ABCDEF"
	for i, c := range sum {
		out[2*i], out[2*i+1] = upperHex[c>>4], upperHex[c&0xf]
	}
	return string(out[:])
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
