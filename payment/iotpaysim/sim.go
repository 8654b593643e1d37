// Package iotpaysim simulates the IOTPay gateway as an http.Handler: it
// verifies every request's signature, enforces unique order numbers and
// single-use payment codes, keeps a ledger tests can read, and picks a
// scenario from the amount's last two digits so every path of a sale
// (declines, slow customers, lost replies, gateway faults) can be triggered
// from a keypad. See docs/iotpay.md for the scenario table.
package iotpaysim

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/scanpay/scanpay/payment/iotpay"
)

// Scenario timings from the scenario table.
const (
	LatePayAfter   = 90 * time.Second // scenario 54
	SlowReplyAfter = 40 * time.Second // scenario 57
)

// Codes the simulator uses for conditions IOTPay's list does not name; the
// client treats unknown codes as "order fate unknown".
const (
	CodeDuplicateOrder  = "0120"
	CodeDuplicateRefund = "0121"
)

// Options configure a simulator.
type Options struct {
	MchID  string
	Key    string
	Clock  Clock       // nil: real time
	Logger *zap.Logger // nil: no logging
}

// Order is one order in the ledger. The payment code itself is not kept in
// the ledger, only its masked form.
type Order struct {
	MchOrderNo  string
	PayOrderID  string
	ChannelID   string
	Currency    string
	Amount      int64
	CodeMasked  string
	CodeSHA256  string // hex SHA-256 of the code, for single-use checks
	Status      int
	Scenario    int
	CreatedAt   time.Time
	PaidAt      time.Time
	Queries     int
	Refunded    int64
	DeclineText string
	Misbooked   bool // booked for other figures than requested (a Misbook fault)
}

// Refund is one accepted refund.
type Refund struct {
	MchRefundNo string
	PayOrderID  string
	MchOrderNo  string
	Amount      int64
	At          time.Time
}

// Sim is the simulated gateway.
type Sim struct {
	opts  Options
	clock Clock
	log   *zap.Logger

	mu        sync.Mutex
	orders    map[string]*Order // by mchOrderNo
	byPayID   map[string]*Order
	codes     map[[32]byte]string // hash of used payment codes → mchOrderNo
	refunds   map[string]*Refund
	refundSeq []string
	orderSeq  []string
	requests  map[string]int            // endpoint → count
	perOrder  map[string]map[string]int // endpoint → mchOrderNo → count
	seq       int
	faults    FaultFunc
}

// New builds a simulator.
func New(opts Options) *Sim {
	c := opts.Clock
	if c == nil {
		c = realClock{}
	}
	l := opts.Logger
	if l == nil {
		l = zap.NewNop()
	}
	return &Sim{
		opts:     opts,
		clock:    c,
		log:      l,
		orders:   map[string]*Order{},
		byPayID:  map[string]*Order{},
		codes:    map[[32]byte]string{},
		refunds:  map[string]*Refund{},
		requests: map[string]int{},
		perOrder: map[string]map[string]int{},
	}
}

// Scenario returns the scenario number an amount selects: its last two
// digits, where endings without a special behaviour act like 00.
func Scenario(amount int64) int {
	s := int(amount % 100)
	if s >= 51 && s <= 59 {
		return s
	}
	return 0
}

// ServeHTTP routes /v1/create_order, /v1/query_order and /v1/refund_order.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	endpoint := strings.TrimPrefix(r.URL.Path, "/v1/")
	switch endpoint {
	case "create_order", "query_order", "refund_order":
	default:
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	s.requests[endpoint]++
	s.mu.Unlock()
	if r.Method != http.MethodPost {
		s.reply(w, failReply(iotpay.CodePostRequired, "POST required"), false)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		s.reply(w, failReply(iotpay.CodeParameter, "unreadable form"), false)
		return
	}
	params := r.PostForm.Get("params")
	if params == "" {
		s.reply(w, failReply(iotpay.CodeEmptyBody, "empty params"), false)
		return
	}
	f, err := iotpay.DecodeFields([]byte(params))
	if err != nil {
		s.reply(w, failReply(iotpay.CodeParameter, "params is not a JSON object"), false)
		return
	}
	if f["mchId"] != s.opts.MchID {
		s.reply(w, failReply(iotpay.CodeNoMerchant, "merchant does not exist"), false)
		return
	}
	if !iotpay.Verify(f, s.opts.Key, f["sign"]) {
		s.log.Info("request refused: bad signature", zap.String("endpoint", endpoint), zap.String("mchOrderNo", f["mchOrderNo"]))
		// The caller is not authenticated, so the reply is not signed.
		s.reply(w, failReply(iotpay.CodeSignature, "Signature Failed"), false)
		return
	}
	if no := f["mchOrderNo"]; no != "" {
		s.mu.Lock()
		if s.perOrder[endpoint] == nil {
			s.perOrder[endpoint] = map[string]int{}
		}
		s.perOrder[endpoint][no]++
		s.mu.Unlock()
	}
	ft := s.fault(endpoint, f)
	switch {
	case ft.Refuse != "":
		s.log.Info("fault: request refused", zap.String("endpoint", endpoint), zap.String("code", ft.Refuse))
		s.refuseWith(w, ft.Refuse)
		return
	case ft.HTTPStatus != 0:
		s.log.Info("fault: HTTP error", zap.String("endpoint", endpoint), zap.Int("status", ft.HTTPStatus))
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(ft.HTTPStatus)
		_, _ = io.WriteString(w, "<html><body>gateway error</body></html>")
		return
	}
	if ft.DropReply || ft.Delay > 0 || ft.Lie != Truth || ft.NoPayOrderID {
		// Process the request into a buffer, then deliver (or not) as the
		// fault says.
		rec := &bufferedReply{header: http.Header{}}
		s.dispatch(endpoint, rec, r, f, ft)
		if ft.DropReply || rec.dropped {
			s.log.Info("fault: reply dropped", zap.String("endpoint", endpoint))
			dropConnection(w)
			return
		}
		if ft.Delay > 0 {
			select {
			case <-s.clock.After(ft.Delay):
			case <-r.Context().Done():
				return
			}
		}
		rec.writeTo(w)
		return
	}
	s.dispatch(endpoint, w, r, f, ft)
}

func (s *Sim) dispatch(endpoint string, w http.ResponseWriter, r *http.Request, f map[string]string, ft Fault) {
	switch endpoint {
	case "create_order":
		s.create(w, r, f, ft)
	case "query_order":
		s.query(w, f, ft)
	case "refund_order":
		s.refund(w, f)
	}
}

// bufferedReply holds a reply until a fault decides its fate. A scenario
// that drops the connection itself (55) marks it dropped.
type bufferedReply struct {
	header  http.Header
	status  int
	body    []byte
	dropped bool
}

func (b *bufferedReply) Header() http.Header  { return b.header }
func (b *bufferedReply) WriteHeader(code int) { b.status = code }
func (b *bufferedReply) Write(p []byte) (int, error) {
	b.body = append(b.body, p...)
	return len(p), nil
}

func (b *bufferedReply) writeTo(w http.ResponseWriter) {
	for k, v := range b.header {
		w.Header()[k] = v
	}
	if b.status != 0 {
		w.WriteHeader(b.status)
	}
	_, _ = w.Write(b.body)
}

type reply map[string]any

func failReply(code, msg string) reply {
	return reply{"retCode": "FAIL", "retMsg": msg, "errCode": code, "errCodeDes": msg}
}

func bizFail(code, msg string) reply {
	r := reply{"retCode": "SUCCESS", "resCode": "FAIL", "retMsg": "", "errCodeDes": msg}
	if code != "" {
		r["errCode"] = code
	}
	return r
}

// reply writes a JSON reply, signed over its top-level scalars when sign is
// true. wrongSign (scenario 59) signs with another key.
func (s *Sim) reply(w http.ResponseWriter, rep reply, sign bool) {
	s.writeReply(w, rep, sign, false)
}

func (s *Sim) writeReply(w http.ResponseWriter, rep reply, sign, wrongSign bool) {
	if sign {
		fields := map[string]string{}
		for k, v := range rep {
			switch v := v.(type) {
			case string:
				fields[k] = v
			case int:
				fields[k] = strconv.Itoa(v)
			case int64:
				fields[k] = strconv.FormatInt(v, 10)
			}
		}
		key := s.opts.Key
		if wrongSign {
			key += "-wrong"
		}
		rep["sign"] = iotpay.Sign(fields, key)
	}
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	_ = json.NewEncoder(w).Encode(rep)
}

func (s *Sim) create(w http.ResponseWriter, r *http.Request, f map[string]string, ft Fault) {
	amount, err := strconv.ParseInt(f["amount"], 10, 64)
	no := f["mchOrderNo"]
	code := f["identityCode"]
	log := s.log.With(zap.String("endpoint", "create_order"), zap.String("mchOrderNo", no),
		zap.String("amount", f["amount"]), zap.String("code", iotpay.MaskCode(code)))
	switch {
	case err != nil || amount <= 0:
		log.Info("refused: bad amount")
		s.reply(w, failReply(iotpay.CodeParameter, "amount must be a positive integer"), true)
		return
	case no == "" || len(no) > 30:
		s.reply(w, failReply(iotpay.CodeParameter, "bad mchOrderNo"), true)
		return
	case f["currency"] != "CAD" && f["currency"] != "USD":
		s.reply(w, failReply(iotpay.CodeParameter, "currency must be CAD or USD"), true)
		return
	case f["codeType"] != "barcode" || code == "":
		s.reply(w, failReply(iotpay.CodeParameter, "codeType barcode and identityCode required"), true)
		return
	}
	switch f["channelId"] {
	case iotpay.ChannelWeChat, iotpay.ChannelAlipay:
	case iotpay.ChannelUnionPay:
		if f["currency"] != "CAD" {
			s.reply(w, failReply(iotpay.CodeParameter, "UnionPay offline: CAD only"), true)
			return
		}
	default:
		s.reply(w, failReply(iotpay.CodeParameter, "unsupported channelId"), true)
		return
	}
	scenario := Scenario(amount)
	if scenario == 56 {
		log.Info("scenario 56: HTTP 502, nothing created")
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = io.WriteString(w, "<html><body>502 Bad Gateway</body></html>")
		return
	}

	s.mu.Lock()
	if _, dup := s.orders[no]; dup {
		s.mu.Unlock()
		log.Info("refused: duplicate mchOrderNo")
		s.reply(w, bizFail(CodeDuplicateOrder, "mchOrderNo already used"), true)
		return
	}
	now := s.clock.Now()
	codeKey := sha256.Sum256([]byte(code))
	s.seq++
	o := &Order{
		MchOrderNo: no,
		PayOrderID: fmt.Sprintf("AM%s%012d", now.UTC().Format("20060102150405"), s.seq),
		ChannelID:  f["channelId"],
		Currency:   f["currency"],
		Amount:     amount,
		CodeMasked: iotpay.MaskCode(code),
		CodeSHA256: hex.EncodeToString(codeKey[:]),
		Scenario:   scenario,
		CreatedAt:  now,
	}
	o.Misbooked = ft.Misbook != Truth
	switch ft.Misbook {
	case LieAmount:
		o.Amount += 100
	case LieCurrency:
		if o.Currency == "CAD" {
			o.Currency = "USD"
		} else {
			o.Currency = "CAD"
		}
	}
	s.orders[no] = o
	s.byPayID[o.PayOrderID] = o
	s.orderSeq = append(s.orderSeq, no)
	_, used := s.codes[codeKey]
	if !used {
		s.codes[codeKey] = no
	}
	var rep reply
	switch {
	case used:
		o.Status = iotpay.StatusCancelledSys
		o.DeclineText = "payment code already used"
		rep = bizFail("", o.DeclineText)
	case scenario == 51:
		o.Status = iotpay.StatusCancelledSys
		o.DeclineText = "insufficient balance"
		rep = bizFail("", o.DeclineText)
	case scenario == 52, scenario == 53, scenario == 54, scenario == 58:
		o.Status = iotpay.StatusPaying
	default:
		o.Status = iotpay.StatusPaid
		o.PaidAt = now
	}
	if rep == nil {
		po := map[string]any{"payOrderId": o.PayOrderID, "mchOrderNo": no, "status": o.Status}
		if ft.NoPayOrderID {
			delete(po, "payOrderId")
		}
		rep = reply{"retCode": "SUCCESS", "resCode": "SUCCESS", "retMsg": "", "payOrder": po}
	}
	status := o.Status
	s.mu.Unlock()
	log.Info("order created", zap.Int("scenario", scenario), zap.Int("status", status), zap.String("payOrderId", o.PayOrderID))

	switch scenario {
	case 55:
		log.Info("scenario 55: dropping the reply")
		dropConnection(w)
		return
	case 57:
		log.Info("scenario 57: replying late")
		select {
		case <-s.clock.After(SlowReplyAfter):
		case <-r.Context().Done():
			return
		}
	}
	s.writeReply(w, rep, true, scenario == 59)
}

// dropConnection closes the client's connection without any reply, as a
// gateway whose reply is lost in the network does.
func dropConnection(w http.ResponseWriter) {
	if b, ok := w.(*bufferedReply); ok {
		b.dropped = true
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

func (s *Sim) query(w http.ResponseWriter, f map[string]string, ft Fault) {
	s.mu.Lock()
	var o *Order
	if no := f["mchOrderNo"]; no != "" {
		o = s.orders[no]
	} else if id := f["payOrderId"]; id != "" {
		o = s.byPayID[id]
	}
	if o == nil {
		s.mu.Unlock()
		s.log.Info("query: no such order", zap.String("mchOrderNo", f["mchOrderNo"]), zap.String("payOrderId", f["payOrderId"]))
		s.reply(w, bizFail(iotpay.CodeOrderNotExist, "order does not exist"), true)
		return
	}
	o.Queries++
	now := s.clock.Now()
	switch o.Scenario {
	case 52:
		if o.Status == iotpay.StatusPaying && o.Queries >= 3 {
			o.Status, o.PaidAt = iotpay.StatusPaid, now
		}
	case 53:
		if o.Status == iotpay.StatusPaying && o.Queries >= 2 {
			o.Status = iotpay.StatusCancelled
		}
	case 54:
		if o.Status == iotpay.StatusPaying && !now.Before(o.CreatedAt.Add(LatePayAfter)) {
			o.Status, o.PaidAt = iotpay.StatusPaid, now
		}
	case 58:
		if o.Queries <= 2 {
			s.mu.Unlock()
			s.log.Info("scenario 58: malformed query reply", zap.String("mchOrderNo", o.MchOrderNo))
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"retCode":"SUCCESS","resCode":"SUCC`)
			return
		}
		if o.Status == iotpay.StatusPaying {
			o.Status, o.PaidAt = iotpay.StatusPaid, now
		}
	}
	rep := reply{
		"retCode": "SUCCESS", "resCode": "SUCCESS", "retMsg": "",
		"mchId": s.opts.MchID, "mchOrderNo": o.MchOrderNo, "payOrderId": o.PayOrderID,
		"channelId": o.ChannelID, "currency": o.Currency, "amount": o.Amount,
		"status": o.Status, "channelOrderNo": "CH" + o.PayOrderID[2:],
	}
	if !o.PaidAt.IsZero() {
		rep["paySuccTime"] = o.PaidAt.UnixMilli()
	}
	if ft.NoPayOrderID {
		delete(rep, "payOrderId")
	}
	// A reply lie on a misbooked order could undo the misbooking and make it
	// undetectable; a misbooking gateway tells its ledger consistently.
	if ft.Lie != Truth && !o.Misbooked && (o.Status == iotpay.StatusPaid || o.Status == iotpay.StatusPaidNotified) {
		applyLie(rep, ft.Lie)
	}
	scenario, status, no := o.Scenario, o.Status, o.MchOrderNo
	s.mu.Unlock()
	s.log.Info("query", zap.String("mchOrderNo", no), zap.Int("status", status))
	s.writeReply(w, rep, true, scenario == 59)
}

func (s *Sim) refund(w http.ResponseWriter, f map[string]string) {
	amount, err := strconv.ParseInt(f["refundAmount"], 10, 64)
	refundNo := f["mchRefundNo"]
	log := s.log.With(zap.String("endpoint", "refund_order"), zap.String("mchRefundNo", refundNo),
		zap.String("payOrderId", f["payOrderId"]), zap.String("amount", f["refundAmount"]))
	if err != nil || amount <= 0 {
		s.reply(w, failReply(iotpay.CodeParameter, "refundAmount must be a positive integer"), true)
		return
	}
	if refundNo == "" || len(refundNo) > 30 {
		s.reply(w, failReply(iotpay.CodeParameter, "bad mchRefundNo"), true)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.byPayID[f["payOrderId"]]
	var rep reply
	switch {
	case s.refunds[refundNo] != nil:
		rep = bizFail(CodeDuplicateRefund, "mchRefundNo already used")
	case o == nil:
		rep = bizFail(iotpay.CodeOrderNotExist, "order does not exist")
	case o.Status != iotpay.StatusPaid && o.Status != iotpay.StatusPaidNotified:
		rep = bizFail("", "order is not paid")
	case f["currency"] != "" && f["currency"] != o.Currency:
		rep = bizFail("", "currency does not match the order")
	case amount > o.Amount-o.Refunded:
		rep = bizFail("", "refund exceeds the refundable amount")
	default:
		o.Refunded += amount
		rf := &Refund{MchRefundNo: refundNo, PayOrderID: o.PayOrderID, MchOrderNo: o.MchOrderNo, Amount: amount, At: s.clock.Now()}
		s.refunds[refundNo] = rf
		s.refundSeq = append(s.refundSeq, refundNo)
		rep = reply{"retCode": "SUCCESS", "resCode": "SUCCESS", "retMsg": "", "mchRefundNo": refundNo,
			"payOrderId": o.PayOrderID, "refundAmount": amount}
	}
	log.Info("refund", zap.Any("resCode", rep["resCode"]), zap.Any("errCodeDes", rep["errCodeDes"]))
	s.reply(w, rep, true)
}

// Orders returns a copy of every order, in creation order.
func (s *Sim) Orders() []Order {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Order, 0, len(s.orderSeq))
	for _, no := range s.orderSeq {
		out = append(out, *s.orders[no])
	}
	return out
}

// Order returns a copy of one order.
func (s *Sim) Order(mchOrderNo string) (Order, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[mchOrderNo]
	if !ok {
		return Order{}, false
	}
	return *o, true
}

// Refunds returns a copy of every accepted refund, in order.
func (s *Sim) Refunds() []Refund {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Refund, 0, len(s.refundSeq))
	for _, no := range s.refundSeq {
		out = append(out, *s.refunds[no])
	}
	return out
}

// Requests counts requests received on an endpoint (create_order,
// query_order, refund_order), whatever their outcome.
func (s *Sim) Requests(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[endpoint]
}

// OrderRequests counts correctly signed requests on an endpoint that named
// mchOrderNo.
func (s *Sim) OrderRequests(endpoint, mchOrderNo string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.perOrder[endpoint][mchOrderNo]
}

// PaidOrders returns the mchOrderNo of every order with status 2 or 3, sorted.
func (s *Sim) PaidOrders() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for no, o := range s.orders {
		if o.Status == iotpay.StatusPaid || o.Status == iotpay.StatusPaidNotified {
			out = append(out, no)
		}
	}
	sort.Strings(out)
	return out
}

// state is the ledger as saved by Snapshot.
type state struct {
	Orders  []*Order          `json:"orders"`
	Refunds []*Refund         `json:"refunds"`
	Codes   map[string]string `json:"codes"` // hex SHA-256 of a used code → mchOrderNo
	Seq     int               `json:"seq"`
}

// Snapshot returns the ledger as JSON, so a gateway that must outlive its
// process (the power-cut test) can be saved and restored.
func (s *Sim) Snapshot() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := state{Codes: map[string]string{}, Seq: s.seq}
	for _, no := range s.orderSeq {
		st.Orders = append(st.Orders, s.orders[no])
	}
	for _, no := range s.refundSeq {
		st.Refunds = append(st.Refunds, s.refunds[no])
	}
	for h, no := range s.codes {
		st.Codes[hex.EncodeToString(h[:])] = no
	}
	return json.Marshal(st)
}

// Restore replaces the ledger with a snapshot.
func (s *Sim) Restore(data []byte) error {
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("restore ledger: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.orders, s.byPayID, s.codes, s.refunds = map[string]*Order{}, map[string]*Order{}, map[[32]byte]string{}, map[string]*Refund{}
	s.orderSeq, s.refundSeq, s.seq = nil, nil, st.Seq
	for _, o := range st.Orders {
		s.orders[o.MchOrderNo], s.byPayID[o.PayOrderID] = o, o
		s.orderSeq = append(s.orderSeq, o.MchOrderNo)
	}
	for _, r := range st.Refunds {
		s.refunds[r.MchRefundNo] = r
		s.refundSeq = append(s.refundSeq, r.MchRefundNo)
	}
	for h, no := range st.Codes {
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != 32 {
			return fmt.Errorf("restore ledger: bad code hash %q", h)
		}
		s.codes[[32]byte(b)] = no
	}
	return nil
}
