package iotpay

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// MaxReplyBytes caps how much of a reply body is read.
const MaxReplyBytes = 1 << 20

// Channels for scanned payment codes.
const (
	ChannelWeChat   = "WX_MICROPAY"
	ChannelAlipay   = "ALIPAY_MICROPAY"
	ChannelUnionPay = "UPI_MICROPAY"
)

// Config holds what the client needs to talk to one merchant account.
type Config struct {
	BaseURL   string // e.g. https://api.iotpaycloud.com
	MchID     string
	Key       string // merchant key; never logged or put in errors
	JobNo     string // merchant login name, sent as jobNo / loginName
	NotifyURL string
	Subject   string
	Body      string
	Device    string // scanner type, optional
	DeviceID  string // terminal id, optional
	ClientIP  string // empty: the local address used to reach the gateway
	Timeout   time.Duration
	// RequireSignedReplies treats a reply without sign as unknown. Replies
	// whose sign is present are always verified.
	RequireSignedReplies bool
	// HTTPClient overrides the transport (tests); nil builds one with
	// system roots and TLS 1.2 or newer.
	HTTPClient *http.Client
}

// Client calls the IOTPay API. It is safe for concurrent use.
type Client struct {
	cfg  Config
	http *http.Client
	base *url.URL
	now  func() time.Time

	// The local address that routes to the gateway, worked out once and
	// again when it may have changed (after a transport error, or when it
	// is older than ipTTL), not with a socket per order.
	ipMu sync.Mutex
	ip   string
	ipAt time.Time
}

// ipTTL is how long a worked-out client IP is trusted without a failure.
const ipTTL = time.Minute

// New checks cfg and builds a client.
func New(cfg Config) (*Client, error) {
	base, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("iotpay: gateway url %q is not an http(s) URL", cfg.BaseURL)
	}
	if cfg.MchID == "" {
		return nil, errors.New("iotpay: merchant id is empty")
	}
	if cfg.Key == "" {
		return nil, errors.New("iotpay: merchant key is empty")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		hc = &http.Client{Transport: tr}
	}
	// Redirects would re-send the order to another URL; refuse them.
	hcCopy := *hc
	hcCopy.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Client{cfg: cfg, http: &hcCopy, base: base, now: time.Now}, nil
}

// CreateRequest is one Merchant Scan Barcode order.
type CreateRequest struct {
	MchOrderNo   string
	ChannelID    string
	Currency     string // CAD or USD
	Amount       int64  // cents
	IdentityCode string // the scanned payment code
	Subject      string // empty: Config.Subject
	Body         string // empty: Config.Body
	Remarks      string
}

// CreateOrder sends create_order once. It never retries: when the reply is
// lost the result is OutcomeUnknown and the order must be queried.
func (c *Client) CreateOrder(ctx context.Context, r CreateRequest) Result {
	const op = "create_order"
	if r.MchOrderNo == "" || len(r.MchOrderNo) > 30 {
		return failLocal(op, "bad order number")
	}
	if r.Amount <= 0 {
		return failLocal(op, "amount must be positive")
	}
	if r.IdentityCode == "" || len(r.IdentityCode) > 64 {
		return failLocal(op, "bad payment code")
	}
	switch r.ChannelID {
	case ChannelWeChat, ChannelAlipay, ChannelUnionPay:
	default:
		return failLocal(op, "unsupported channel")
	}
	if r.Currency != "CAD" && r.Currency != "USD" {
		return failLocal(op, "unsupported currency")
	}
	subject, body := r.Subject, r.Body
	if subject == "" {
		subject = c.cfg.Subject
	}
	if body == "" {
		body = c.cfg.Body
	}
	// In the signature's (byte) order, which encode's sort then keeps as is.
	f := fields{
		{"amount", strconv.FormatInt(r.Amount, 10), true},
		{"body", body, false},
		{"channelId", r.ChannelID, false},
		{"clientIp", c.clientIP(), false},
		{"codeType", "barcode", false},
		{"currency", r.Currency, false},
		{"device", c.cfg.Device, false},
		{"deviceId", c.cfg.DeviceID, false},
		{"identityCode", r.IdentityCode, false},
		{"jobNo", c.cfg.JobNo, false},
		{"mchId", c.cfg.MchID, false},
		{"mchOrderNo", r.MchOrderNo, false},
		{"notifyUrl", c.cfg.NotifyURL, false},
		{"remarks", r.Remarks, false},
		{"subject", subject, false},
	}
	res := c.call(ctx, op, "/v1/create_order", f)
	if res.Outcome != OutcomeUnknown && res.MchOrderNo != "" && res.MchOrderNo != r.MchOrderNo {
		return unknown(op, "reply names another order", nil)
	}
	return res
}

// QueryRequest names an order by exactly one of its numbers.
type QueryRequest struct {
	MchOrderNo string
	PayOrderID string
}

// QueryOrder asks for an order's status.
func (c *Client) QueryOrder(ctx context.Context, q QueryRequest) Result {
	const op = "query_order"
	if (q.MchOrderNo == "") == (q.PayOrderID == "") {
		return failLocal(op, "give exactly one of mchOrderNo and payOrderId")
	}
	f := fields{
		{"mchId", c.cfg.MchID, false},
		{"mchOrderNo", q.MchOrderNo, false},
		{"payOrderId", q.PayOrderID, false},
	}
	res := c.call(ctx, op, "/v1/query_order", f)
	if res.Outcome != OutcomeUnknown {
		if q.MchOrderNo != "" && res.MchOrderNo != "" && res.MchOrderNo != q.MchOrderNo ||
			q.PayOrderID != "" && res.PayOrderID != "" && res.PayOrderID != q.PayOrderID {
			return unknown(op, "reply names another order", nil)
		}
	}
	return res
}

// RefundRequest refunds part or all of a paid order.
type RefundRequest struct {
	MchRefundNo string
	PayOrderID  string
	Amount      int64 // cents, at most the paid amount
	Currency    string
}

// RefundOrder sends refund_order once. OutcomeRefunded means the gateway
// accepted it; OutcomeUnknown means the reply was lost and the refund must
// be re-checked by the operator.
func (c *Client) RefundOrder(ctx context.Context, r RefundRequest) Result {
	const op = "refund_order"
	if r.MchRefundNo == "" || len(r.MchRefundNo) > 30 {
		return failLocal(op, "bad refund number")
	}
	if r.PayOrderID == "" {
		return failLocal(op, "no gateway order id")
	}
	if r.Amount <= 0 {
		return failLocal(op, "amount must be positive")
	}
	f := fields{ // in byte order, as in CreateOrder
		{"clientIp", c.clientIP(), false},
		{"currency", r.Currency, false},
		{"device", c.cfg.Device, false},
		{"loginName", c.cfg.JobNo, false},
		{"mchId", c.cfg.MchID, false},
		{"mchRefundNo", r.MchRefundNo, false},
		{"payOrderId", r.PayOrderID, false},
		{"refundAmount", strconv.FormatInt(r.Amount, 10), true},
	}
	res := c.call(ctx, op, "/v1/refund_order", f)
	if res.Outcome == OutcomePaid || res.Outcome == OutcomePending {
		// A refund reply carries no payment status; SUCCESS means accepted.
		res.Outcome = OutcomeRefunded
	}
	return res
}

type field struct {
	name, value string
	number      bool
}

type fields []field

// encode builds the signed JSON object and the form body carrying it:
// the object's names in byte order ("sign" among them), as encoding/json
// writes a map without HTML escaping, built directly because a sale sends
// two requests and the map, reflection and sort cost more than the rest of
// the request's preparation (FuzzEncode holds it to encoding/json and
// url.Values). The object is built on the stack when it fits, and the
// body escaped into one allocation of its exact size.
func (f fields) encode(key string) ([]byte, error) {
	var keptArr [24]field
	kept := keptArr[:0]
	for _, fl := range f {
		if fl.value != "" && fl.name != "sign" {
			kept = append(kept, fl)
		}
	}
	// A name given twice keeps its last value, as a map would. (The
	// client lists its own requests' fields in order, where the sort is a
	// pass of comparisons; out of order it was a fifth of a request's
	// preparation.)
	slices.SortStableFunc(kept, func(a, b field) int { return strings.Compare(a.name, b.name) })
	uniq := kept[:0]
	for i, fl := range kept {
		if i+1 < len(kept) && kept[i+1].name == fl.name {
			continue
		}
		uniq = append(uniq, fl)
	}
	kept = uniq
	sign := field{name: "sign", value: signSorted(kept, key)}
	at, _ := slices.BinarySearchFunc(kept, "sign", func(fl field, name string) int { return strings.Compare(fl.name, name) })
	kept = slices.Insert(kept, at, sign)

	var objArr [1024]byte
	b := objArr[:0]
	b = append(b, '{')
	for i, fl := range kept {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, fl.name)
		b = append(b, ':')
		if !fl.number {
			b = appendJSONString(b, fl.value)
			continue
		}
		if !validNumber(fl.value) {
			return nil, fmt.Errorf("json: invalid number literal %q", fl.value)
		}
		b = append(b, fl.value...)
	}
	b = append(b, '}')
	const prefix = "params="
	body := make([]byte, 0, len(prefix)+queryEscapedLen(b))
	body = append(body, prefix...)
	return appendQueryEscape(body, b), nil
}

// queryEscapedLen is the length of s escaped by appendQueryEscape.
func queryEscapedLen(s []byte) int {
	n := len(s)
	for _, c := range s {
		if c != ' ' && !queryUnreserved(c) {
			n += 2
		}
	}
	return n
}

// appendQueryEscape appends s escaped as url.QueryEscape does: letters,
// digits and -_.~ stay, a space becomes +, every other byte %XX.
func appendQueryEscape(dst, s []byte) []byte {
	const upperHex = "0123456789ABCDEF"
	for _, c := range s {
		switch {
		case queryUnreserved(c):
			dst = append(dst, c)
		case c == ' ':
			dst = append(dst, '+')
		default:
			dst = append(dst, '%', upperHex[c>>4], upperHex[c&15])
		}
	}
	return dst
}

func queryUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~'
}

// validNumber reports whether s is a JSON number literal, the check
// encoding/json makes of a json.Number.
func validNumber(s string) bool {
	i := 0
	digits := func() bool {
		n := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i > n
	}
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case !digits():
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	return i == len(s)
}

// appendJSONString appends s as a JSON string the way encoding/json writes
// it with HTML escaping off: quote, backslash and control bytes escaped,
// U+2028 and U+2029 escaped, invalid UTF-8 replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// EncodeParams returns the form body for fields (name → value); numeric
// names are encoded as JSON numbers. Used by tools and tests that speak to
// the gateway without a Client.
func EncodeParams(values map[string]string, numeric map[string]bool, key string) (string, error) {
	f := make(fields, 0, len(values))
	for n, v := range values {
		f = append(f, field{n, v, numeric[n]})
	}
	b, err := f.encode(key)
	return string(b), err
}

func (c *Client) call(ctx context.Context, op, path string, f fields) Result {
	form, err := f.encode(c.cfg.Key)
	if err != nil {
		return failLocal(op, "cannot encode request")
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base.String()+path, bytes.NewReader(form))
	if err != nil {
		return failLocal(op, "cannot build request")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		c.forgetIP() // the route may have changed with the network
		return transportFailure(op, err, c.now)
	}
	defer resp.Body.Close()
	body, err := readReply(resp.Body, resp.ContentLength)
	if err != nil {
		return unknown(op, "reply cut off", err)
	}
	if len(body) > MaxReplyBytes {
		return unknown(op, "reply too large", ErrReplyTooLarge)
	}
	if resp.StatusCode != http.StatusOK {
		return unknown(op, fmt.Sprintf("gateway error HTTP %d", resp.StatusCode), nil)
	}
	reply, err := ParseReply(body)
	if err != nil {
		return unknown(op, "unreadable reply", err)
	}
	if reply.Sign == "" {
		if c.cfg.RequireSignedReplies {
			return unknown(op, "unsigned reply", ErrBadSignature)
		}
	} else if !Verify(reply.Signed, c.cfg.Key, reply.Sign) {
		return unknown(op, "badly signed reply", ErrBadSignature)
	}
	return reply.Classify(op)
}

// readReply reads a reply body of at most MaxReplyBytes (and one byte
// more, to tell a longer one), into a buffer of the length the gateway
// announced when it did: io.ReadAll grows its buffer twice for a usual
// reply.
func readReply(r io.Reader, announced int64) ([]byte, error) {
	lr := io.LimitedReader{R: r, N: MaxReplyBytes + 1}
	size := 512
	if announced > 0 && announced <= MaxReplyBytes {
		size = int(announced) + 1 // room to read the EOF without growing
	}
	b := make([]byte, 0, size)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := lr.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

func (c *Client) clientIP() string {
	if c.cfg.ClientIP != "" {
		return c.cfg.ClientIP
	}
	c.ipMu.Lock()
	defer c.ipMu.Unlock()
	if c.ip != "" && time.Since(c.ipAt) < ipTTL {
		return c.ip
	}
	c.ip, c.ipAt = routeIP(c.base.Hostname()), time.Now()
	return c.ip
}

func (c *Client) forgetIP() {
	c.ipMu.Lock()
	c.ip = ""
	c.ipMu.Unlock()
}

// routeIP asks the kernel which local address routes to host: a UDP
// "connection" sends nothing.
func routeIP(host string) string {
	conn, err := net.Dial("udp", net.JoinHostPort(host, "443"))
	if err != nil {
		return "127.0.0.1"
	}
	defer conn.Close()
	if a, ok := conn.LocalAddr().(*net.UDPAddr); ok {
		return a.IP.String()
	}
	return "127.0.0.1"
}

func failLocal(op, msg string) Result {
	return Result{Outcome: OutcomeFailed, Status: -1, Amount: -1, Err: &Error{Op: op, Msg: msg, NotSent: true}}
}

func unknown(op, msg string, err error) Result {
	return Result{Outcome: OutcomeUnknown, Status: -1, Amount: -1, Err: &Error{Op: op, Msg: msg, Err: err}}
}

// transportFailure classifies an error from http.Client.Do. Every case is
// unknown; a dial failure is flagged NotSent because no byte left.
func transportFailure(op string, err error, now func() time.Time) Result {
	res := unknown(op, "gateway unreachable", err)
	var opErr *net.OpError
	var dnsErr *net.DNSError
	var certErr x509.CertificateInvalidError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		res.Err.Msg = "gateway timeout"
	case errors.Is(err, context.Canceled):
		res.Err.Msg = "cancelled"
	case errors.As(err, &certErr) && certErr.Reason == x509.Expired && now().Year() < 2025:
		res.Err.Msg = "clock not set"
		res.Err.NotSent = true
	case errors.As(err, &certErr), errors.As(err, new(x509.UnknownAuthorityError)), errors.As(err, new(x509.HostnameError)):
		res.Err.Msg = "gateway certificate rejected"
		res.Err.NotSent = true
	case errors.As(err, &dnsErr):
		res.Err.Msg = "gateway name not found"
		res.Err.NotSent = true
	case errors.As(err, &opErr) && opErr.Op == "dial":
		res.Err.Msg = "gateway unreachable"
		res.Err.NotSent = true
	}
	return res
}
