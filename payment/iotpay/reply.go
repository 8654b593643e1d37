package iotpay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Reply is a parsed gateway reply. Parsing is tolerant: numbers may be JSON
// numbers or strings, payOrderId may sit in payOrder or at the top level,
// and unknown fields are kept for the signature but otherwise ignored.
type Reply struct {
	RetCode    string
	ResCode    string
	RetMsg     string
	ErrCode    string
	ErrCodeDes string
	PayOrderID string
	MchOrderNo string
	ChannelID  string
	Currency   string
	Status     int // -1 when absent or not a number
	// StatusNested is true when the status came from the nested payOrder
	// object, which the reply's signature does not cover.
	StatusNested bool
	Amount       int64
	PaidAt       int64
	Sign         string
	// Signed holds the top-level fields with non-empty scalar values, the
	// set the reply's signature covers (nested objects excluded).
	Signed map[string]string
}

// ParseReply decodes a reply body. It fails only when the body is not a
// JSON object.
func ParseReply(body []byte) (*Reply, error) {
	// One copy of the body as a string: plain names and values (no escape)
	// are substrings of it, not allocations of their own (a reply is
	// parsed on the way to the customer's screen).
	// A query's reply has about 18 members: one allocation for them.
	top, ok := splitObject(body, string(body), 24)
	if !ok {
		// Not an object, or not valid JSON: encoding/json says which.
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, fmt.Errorf("reply is not one JSON object: %w", err)
		}
		if m == nil {
			return nil, errors.New("reply is JSON null")
		}
		top = fromMap(m)
	}
	r := &Reply{Status: -1, Amount: -1, Signed: make(map[string]string, len(top))}
	// A name given twice counts once, with its last value (as a map
	// decodes it).
	for _, m := range top {
		s, ok := scalarText(m.raw, m.text)
		if !ok || s == "" || m.name == "sign" {
			delete(r.Signed, m.name)
			continue
		}
		r.Signed[m.name] = s
	}
	// Every other field's text is its Signed value: a field left out of
	// Signed is empty or not a scalar, which reads as "" too.
	f := r.Signed
	r.Sign = top.get("sign")
	r.RetCode = strings.ToUpper(f["retCode"])
	r.ResCode = strings.ToUpper(f["resCode"])
	r.RetMsg = f["retMsg"]
	r.ErrCode = f["errCode"]
	r.ErrCodeDes = f["errCodeDes"]
	r.PayOrderID = f["payOrderId"]
	r.MchOrderNo = f["mchOrderNo"]
	r.ChannelID = f["channelId"]
	r.Currency = strings.ToUpper(f["currency"])
	status := f["status"]
	amount := f["amount"]
	paid := f["paySuccTime"]
	if m, ok := top.find("payOrder"); ok {
		if nested, ok := nestedObject(m); ok {
			if v := nested.get("payOrderId"); v != "" {
				r.PayOrderID = v
			}
			if v := nested.get("mchOrderNo"); v != "" {
				r.MchOrderNo = v
			}
			// The signed top-level status wins; the nested one is used
			// only when there is no other, and is marked as unsigned.
			if v := nested.get("status"); v != "" && status == "" {
				status, r.StatusNested = v, true
			}
			if v := nested.get("amount"); v != "" && amount == "" {
				amount = v
			}
			if v := nested.get("channelId"); v != "" && r.ChannelID == "" {
				r.ChannelID = v
			}
			if v := nested.get("currency"); v != "" && r.Currency == "" {
				r.Currency = strings.ToUpper(v)
			}
		}
	}
	if n, err := strconv.Atoi(strings.TrimSpace(status)); err == nil && n >= 0 {
		r.Status = n
	}
	if n, err := strconv.ParseInt(strings.TrimSpace(amount), 10, 64); err == nil && n >= 0 {
		r.Amount = n
	}
	if n, err := strconv.ParseInt(strings.TrimSpace(paid), 10, 64); err == nil && n > 0 {
		r.PaidAt = n
	}
	return r, nil
}

// member is one name and raw value of a JSON object; text is the same
// bytes as raw, as a string.
type member struct {
	name string
	raw  json.RawMessage
	text string
}

// object is a JSON object's members in order; a name given twice means
// its last value.
type object []member

func (o object) find(name string) (member, bool) {
	for i := len(o) - 1; i >= 0; i-- {
		if o[i].name == name {
			return o[i], true
		}
	}
	return member{}, false
}

func (o object) get(name string) string {
	m, _ := o.find(name)
	s, _ := scalarText(m.raw, m.text)
	return s
}

func fromMap(m map[string]json.RawMessage) object {
	o := make(object, 0, len(m))
	for name, raw := range m {
		o = append(o, member{name, raw, string(raw)})
	}
	return o
}

// nestedObject is the object m's value holds, as json.Unmarshal into a
// map would take it: ok is false for null and for anything not an object.
func nestedObject(m member) (object, bool) {
	if o, ok := splitObject(m.raw, m.text, 6); ok {
		return o, true
	}
	var mm map[string]json.RawMessage
	if json.Unmarshal(m.raw, &mm) != nil || mm == nil {
		return nil, false
	}
	return fromMap(mm), true
}

// splitObject splits data into its members when data is one valid JSON
// object, without decoding the values: a reply is split twice per sale,
// and a map through encoding/json costs most of a reply's handling. text
// is data as a string; plain names and the members' texts are substrings
// of it. members is room for the members expected.
// Names with an escape or a byte above ASCII are decoded by encoding/json.
// ok is false for anything else (invalid JSON, null, another type); the
// caller then asks encoding/json. FuzzParseReplySplit holds the result to
// encoding/json's.
func splitObject(data []byte, text string, members int) (o object, ok bool) {
	if !json.Valid(data) {
		return nil, false
	}
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, false
	}
	o = make(object, 0, members)
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return o, true
	}
	for i < len(data) && data[i] == '"' {
		kEnd := stringEnd(data, i)
		if kEnd < 0 {
			return nil, false
		}
		name, ok := objectName(data[i:kEnd], text[i:kEnd])
		if !ok {
			return nil, false
		}
		i = skipSpace(data, kEnd)
		if i >= len(data) || data[i] != ':' {
			return nil, false
		}
		i = skipSpace(data, i+1)
		vEnd := valueEnd(data, i)
		if vEnd < 0 {
			return nil, false
		}
		o = append(o, member{name, data[i:vEnd:vEnd], text[i:vEnd]})
		i = skipSpace(data, vEnd)
		if i >= len(data) {
			return nil, false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case '}':
			return o, true
		default:
			return nil, false
		}
	}
	return nil, false
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// stringEnd is the index after the string that starts at data[i] (a
// quote), or -1.
func stringEnd(data []byte, i int) int {
	for j := i + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// valueEnd is the index after the value that starts at data[i], or -1.
func valueEnd(data []byte, i int) int {
	if i >= len(data) {
		return -1
	}
	switch data[i] {
	case '"':
		return stringEnd(data, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				end := stringEnd(data, j)
				if end < 0 {
					return -1
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	default: // a number, true, false or null
		j := i
		for j < len(data) && data[j] != ',' && data[j] != '}' && data[j] != ']' &&
			data[j] != ' ' && data[j] != '\t' && data[j] != '\n' && data[j] != '\r' {
			j++
		}
		return j
	}
}

// objectName decodes a member's quoted name; qtext is quoted as a string.
func objectName(quoted []byte, qtext string) (string, bool) {
	inner := quoted[1 : len(quoted)-1]
	plain := true
	for _, c := range inner {
		if c == '\\' || c >= utf8.RuneSelf {
			plain = false
			break
		}
	}
	if plain {
		return qtext[1 : len(qtext)-1], true
	}
	var s string
	if json.Unmarshal(quoted, &s) != nil {
		return "", false
	}
	return s, true
}

// scalar renders a JSON scalar as the text the signature uses: strings
// unquoted, numbers as written, booleans as true/false. null, objects and
// arrays are not scalars.
func scalar(raw json.RawMessage) (string, bool) {
	return scalarText(raw, string(raw))
}

// scalarText is scalar of raw, whose bytes text holds as a string.
//
// raw is a value the reply's decoder has already checked, so the common
// forms are read as they stand, as substrings of text: a string without
// escapes (valid UTF-8) and a number's literal (what json.Number keeps).
// Other strings and booleans go through encoding/json. (Each field of
// every reply passes here.)
func scalarText(raw json.RawMessage, text string) (string, bool) {
	start, end := 0, len(raw)
	for start < end && isSpace(raw[start]) {
		start++
	}
	for end > start && isSpace(raw[end-1]) {
		end--
	}
	raw, text = raw[start:end], text[start:end]
	if len(raw) == 0 {
		return "", false
	}
	switch raw[0] {
	case '"':
		if len(raw) >= 2 && raw[len(raw)-1] == '"' && plainString(raw[1:len(raw)-1]) {
			return text[1 : len(text)-1], true
		}
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return s, true
	case 't', 'f':
		var b bool
		if json.Unmarshal(raw, &b) != nil {
			return "", false
		}
		return strconv.FormatBool(b), true
	case 'n', '{', '[':
		return "", false
	default:
		// Anything else that is valid JSON is a number.
		if !json.Valid(raw) {
			return "", false
		}
		return text, true
	}
}

// isSpace is JSON's whitespace, all that a valid value can have around it.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// plainString reports whether s, the inside of a JSON string, decodes to
// itself: valid UTF-8 with no escape, quote or control character.
func plainString(s []byte) bool {
	for _, c := range s {
		if c == '\\' || c == '"' || c < 0x20 {
			return false
		}
	}
	return utf8.Valid(s)
}

// Error codes (IOTPay's list).
const (
	CodeSystemError     = "0010"
	CodePostRequired    = "0011"
	CodeEmptyBody       = "0012"
	CodeSignature       = "0013"
	CodeParameter       = "0014"
	CodeNoMerchant      = "0015"
	CodeUpstreamTimeout = "0110"
	CodeUpstreamError   = "0111"
	CodeOrderNotExist   = "0112"
	CodeOrderPaid       = "0113"
	CodeDatabase        = "0118"
)

// rejectedCodes say the gateway refused the request itself, so no order
// was created. Every other code leaves the order's fate open.
var rejectedCodes = map[string]string{
	CodePostRequired: "request refused",
	CodeEmptyBody:    "request refused",
	CodeSignature:    "signature refused (check merchant key)",
	CodeParameter:    "request refused (bad parameter)",
	CodeNoMerchant:   "unknown merchant id",
}

// Classify turns a verified reply into a Result for operation op.
//
// A FAIL reply is about the request it answers. For create_order it may
// mean the order was refused (the caller confirms with a query). For
// query_order it says nothing about the order's payment, except 0112 (the
// order does not exist). For refund_order, a business refusal or a refused
// request says the refund was not made; system errors leave it unknown.
func (r *Reply) Classify(op string) Result {
	res := Result{
		Outcome:      OutcomeUnknown,
		Status:       r.Status,
		StatusNested: r.StatusNested,
		PayOrderID:   r.PayOrderID,
		MchOrderNo:   r.MchOrderNo,
		ChannelID:    r.ChannelID,
		Currency:     r.Currency,
		Amount:       r.Amount,
		PaidAt:       r.PaidAt,
	}
	fail := r.RetCode == "FAIL" || r.ResCode == "FAIL"
	ok := r.RetCode == "SUCCESS" && r.ResCode == "SUCCESS"
	switch {
	case fail:
		msg := firstNonEmpty(r.ErrCodeDes, r.RetMsg, "declined")
		res.Err = &Error{Op: op, Msg: cashierText(msg), Code: r.ErrCode}
		switch {
		case op == "query_order" && r.ErrCode == CodeOrderNotExist:
			res.Outcome = OutcomeNotFound
		case op == "query_order":
			// A refused or failed query says nothing about the order.
			res.Outcome = OutcomeUnknown
		case rejectedCodes[r.ErrCode] != "":
			res.Outcome = OutcomeFailed
			res.Err.Msg = rejectedCodes[r.ErrCode]
		case r.ErrCode == "":
			// A business refusal with no code (e.g. insufficient balance).
			res.Outcome = OutcomeFailed
		default:
			// System errors, upstream timeouts, "already paid" and codes
			// this client does not know leave the order's fate open.
			res.Outcome = OutcomeUnknown
		}
	case ok && op == "refund_order":
		res.Outcome = OutcomeRefunded
	case ok:
		switch {
		case r.Status == StatusPaid || r.Status == StatusPaidNotified:
			res.Outcome = OutcomePaid
		case r.Status == StatusCreated || r.Status == StatusPaying:
			res.Outcome = OutcomePending
		case r.Status > StatusPaidNotified:
			res.Outcome = OutcomeFailed
			msg := "cancelled"
			if r.Status == StatusCancelled {
				msg = "cancelled by customer"
			}
			res.Err = &Error{Op: op, Msg: msg}
		default:
			res.Err = &Error{Op: op, Msg: "reply has no order status"}
		}
	default:
		// Without both result codes a reply decides nothing, a refund's
		// included: a missing resCode is not a success.
		res.Err = &Error{Op: op, Msg: "reply has no result code"}
	}
	return res
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// cashierText keeps a gateway message short and printable, and scrubs
// digit runs that could be a payment code (a gateway may echo the code in
// an error text) before it reaches a log, the journal or the display.
func cashierText(s string) string {
	var b strings.Builder
	for _, r := range ScrubDigits(s) {
		if r < 0x20 || r == 0x7f {
			continue
		}
		b.WriteRune(r)
		if b.Len() >= 60 {
			break
		}
	}
	return b.String()
}

// MinScrubbedDigits is the shortest digit run ScrubDigits hides. Payment
// codes are 16 digits or more; shorter runs (amounts, error codes, dates)
// stay readable.
const MinScrubbedDigits = 10

// ScrubDigits masks every run of MinScrubbedDigits or more digits in s,
// counting digits separated by single spaces or dashes as one run (a code
// printed in groups), as MaskCode would mask a code.
func ScrubDigits(s string) string {
	var out strings.Builder
	i := 0
	for i < len(s) {
		if s[i] < '0' || s[i] > '9' {
			out.WriteByte(s[i])
			i++
			continue
		}
		// Extend the run over digits and single separators between digits.
		j, digits := i, 0
		var run []byte
		for j < len(s) {
			c := s[j]
			if c >= '0' && c <= '9' {
				run = append(run, c)
				digits++
				j++
				continue
			}
			if (c == ' ' || c == '-') && j+1 < len(s) && s[j+1] >= '0' && s[j+1] <= '9' {
				j++
				continue
			}
			break
		}
		if digits >= MinScrubbedDigits {
			out.WriteString(MaskCode(string(run)))
		} else {
			out.WriteString(s[i:j])
		}
		i = j
	}
	return out.String()
}

// DecodeFields returns the top-level fields of a JSON object that have
// non-empty scalar values, as the text the signature covers. The gateway
// simulator uses it to read requests.
func DecodeFields(data []byte) (map[string]string, error) {
	var top map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&top); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if top == nil {
		return nil, errors.New("JSON null")
	}
	out := make(map[string]string, len(top))
	for name, raw := range top {
		if s, ok := scalar(raw); ok && s != "" {
			out[name] = s
		}
	}
	return out, nil
}
