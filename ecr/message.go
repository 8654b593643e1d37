package ecr

import (
	"fmt"
	"strconv"
	"strings"
)

// Request is a payment request from the register.
type Request struct {
	POS        string // "01"–"99"
	Amount     int64  // cents
	FullAnswer bool   // answer flag 1: 80-character result
	Mode       byte   // payment mode, echoed
	Type       byte   // '0' purchase, '1' credit, '2' refund, '4' automatic
	Currency   string // ISO 4217 numeric: "124", "840"
	Private    string // 10 characters, echoed exactly
	Immediate  bool   // delay A011: answer at once
	Auth       string // B010/B011, ignored
}

// Transaction types.
const (
	TypePurchase  = '0'
	TypeCredit    = '1'
	TypeRefund    = '2'
	TypeAutomatic = '4'
)

// Ref is the private reference without its padding.
func (r Request) Ref() string { return strings.TrimRight(r.Private, " ") }

// CurrencyCode maps the numeric currency to scanpay's: 124 CAD, 840 USD.
func CurrencyCode(numeric string) (string, bool) {
	switch numeric {
	case "124":
		return "CAD", true
	case "840":
		return "USD", true
	}
	return "", false
}

// NumericCurrency is CurrencyCode's inverse.
func NumericCurrency(code string) string {
	switch code {
	case "USD":
		return "840"
	}
	return "124"
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// ParseRequest decodes a request payload. It fails on a malformed payload
// (wrong length, non-digits where digits belong, unknown flags): the link
// answers those with NAK. A well-formed request for something scanpay does
// not do (another currency, a zero amount) parses and is refused later.
func ParseRequest(p []byte) (Request, error) {
	if len(p) != RequestLen {
		return Request{}, fmt.Errorf("request payload is %d characters, want %d", len(p), RequestLen)
	}
	s := string(p)
	if !printable(s) {
		return Request{}, fmt.Errorf("request has control characters")
	}
	r := Request{POS: s[0:2], Mode: s[11], Type: s[12], Currency: s[13:16], Private: s[16:26], Auth: s[30:34]}
	if !digits(r.POS) {
		return Request{}, fmt.Errorf("POS number %q is not two digits", r.POS)
	}
	if !digits(s[2:10]) {
		return Request{}, fmt.Errorf("amount %q is not eight digits", s[2:10])
	}
	r.Amount, _ = strconv.ParseInt(s[2:10], 10, 64)
	switch s[10] {
	case '0':
	case '1':
		r.FullAnswer = true
	default:
		return Request{}, fmt.Errorf("answer flag %q must be 0 or 1", s[10])
	}
	switch r.Type {
	case TypePurchase, TypeCredit, TypeRefund, TypeAutomatic:
	default:
		return Request{}, fmt.Errorf("transaction type %q is not 0, 1, 2 or 4", r.Type)
	}
	if !digits(r.Currency) {
		return Request{}, fmt.Errorf("currency %q is not three digits", r.Currency)
	}
	switch s[26:30] {
	case "A010":
	case "A011":
		r.Immediate = true
	default:
		return Request{}, fmt.Errorf("delay %q must be A010 or A011", s[26:30])
	}
	return r, nil
}

// Encode renders the request payload (the register's side).
func (r Request) Encode() []byte {
	flag, delay := byte('0'), "A010"
	if r.FullAnswer {
		flag = '1'
	}
	if r.Immediate {
		delay = "A011"
	}
	auth := r.Auth
	if len(auth) != 4 {
		auth = "B010"
	}
	mode, typ := r.Mode, r.Type
	if mode == 0 {
		mode = '1'
	}
	if typ == 0 {
		typ = TypePurchase
	}
	return []byte(fmt.Sprintf("%-2.2s%08d%c%c%c%-3.3s%-10.10s%s%s", r.POS, r.Amount, flag, mode, typ, r.Currency, r.Private, delay, auth))
}

// Result statuses.
const (
	StatusApproved    = '0'
	StatusRefused     = '7'
	StatusNotVerified = '9'
)

// Result is the terminal's answer.
type Result struct {
	POS      string
	Status   byte
	Amount   int64
	Mode     byte
	Report   string // full answer only: wallet and IOTPay order, never the code
	Currency string
	Private  string
	Full     bool
}

// Encode renders the 25- or 80-character payload.
func (r Result) Encode() []byte {
	head := fmt.Sprintf("%-2.2s%c%08d%c", r.POS, r.Status, r.Amount, r.Mode)
	tail := fmt.Sprintf("%-3.3s%-10.10s", r.Currency, r.Private)
	if !r.Full {
		return []byte(head + tail)
	}
	return []byte(head + fmt.Sprintf("%-55.55s", r.Report) + tail)
}

// ParseResult decodes a result payload (the register's side).
func ParseResult(p []byte) (Result, error) {
	s := string(p)
	var r Result
	switch len(s) {
	case ShortResultLen:
		r.Currency, r.Private = s[12:15], s[15:25]
	case FullResultLen:
		r.Full, r.Report, r.Currency, r.Private = true, s[12:67], s[67:70], s[70:80]
	default:
		return Result{}, fmt.Errorf("result payload is %d characters, want 25 or 80", len(s))
	}
	r.POS, r.Status, r.Mode = s[0:2], s[2], s[11]
	if !digits(s[3:11]) {
		return Result{}, fmt.Errorf("amount %q is not eight digits", s[3:11])
	}
	r.Amount, _ = strconv.ParseInt(s[3:11], 10, 64)
	switch r.Status {
	case StatusApproved, StatusRefused, StatusNotVerified:
	default:
		return Result{}, fmt.Errorf("status %q is not 0, 7 or 9", r.Status)
	}
	return r, nil
}

// walletTags shorten channels for the report field.
var walletTags = map[string]string{"WX_MICROPAY": "WX", "ALIPAY_MICROPAY": "AL", "UPI_MICROPAY": "UP"}

// Report builds the full answer's report: wallet and IOTPay order id.
func Report(channel, payOrderID string) string {
	tag := walletTags[channel]
	if tag == "" {
		return ""
	}
	return tag + " " + payOrderID
}
