package iotpay

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
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
	f := fields{
		{"mchId", c.cfg.MchID, false},
		{"mchOrderNo", r.MchOrderNo, false},
		{"jobNo", c.cfg.JobNo, false},
		{"currency", r.Currency, false},
		{"channelId", r.ChannelID, false},
		{"amount", strconv.FormatInt(r.Amount, 10), true},
		{"device", c.cfg.Device, false},
		{"deviceId", c.cfg.DeviceID, false},
		{"notifyUrl", c.cfg.NotifyURL, false},
		{"subject", subject, false},
		{"body", body, false},
		{"codeType", "barcode", false},
		{"identityCode", r.IdentityCode, false},
		{"remarks", r.Remarks, false},
		{"clientIp", c.clientIP(), false},
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
	f := fields{
		{"mchId", c.cfg.MchID, false},
		{"mchRefundNo", r.MchRefundNo, false},
		{"refundAmount", strconv.FormatInt(r.Amount, 10), true},
		{"clientIp", c.clientIP(), false},
		{"device", c.cfg.Device, false},
		{"loginName", c.cfg.JobNo, false},
		{"payOrderId", r.PayOrderID, false},
		{"currency", r.Currency, false},
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

// encode builds the signed JSON object and the form body carrying it.
func (f fields) encode(key string) (string, error) {
	m := make(map[string]string, len(f))
	obj := make(map[string]any, len(f)+1)
	for _, fl := range f {
		if fl.value == "" {
			continue
		}
		m[fl.name] = fl.value
		if fl.number {
			obj[fl.name] = json.Number(fl.value)
		} else {
			obj[fl.name] = fl.value
		}
	}
	obj["sign"] = Sign(m, key)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(obj); err != nil {
		return "", err
	}
	return url.Values{"params": {strings.TrimSuffix(buf.String(), "\n")}}.Encode(), nil
}

// EncodeParams returns the form body for fields (name → value); numeric
// names are encoded as JSON numbers. Used by tools and tests that speak to
// the gateway without a Client.
func EncodeParams(values map[string]string, numeric map[string]bool, key string) (string, error) {
	f := make(fields, 0, len(values))
	for n, v := range values {
		f = append(f, field{n, v, numeric[n]})
	}
	return f.encode(key)
}

func (c *Client) call(ctx context.Context, op, path string, f fields) Result {
	form, err := f.encode(c.cfg.Key)
	if err != nil {
		return failLocal(op, "cannot encode request")
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base.String()+path, strings.NewReader(form))
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
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxReplyBytes+1))
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
