package payment

import (
	"context"
	"fmt"
	"time"

	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/journal"
)

// State is the lane's state. Only the Terminal's loop changes it.
type State int

const (
	StateStarting     State = 0 // recovering open orders; no sale accepted
	StateIdle         State = 1
	StateAwaitingCode State = 2 // amount pending, waiting for the code
	StateSubmitting   State = 3 // order journaled, create_order in flight
	StatePolling      State = 4 // following the order by query
	StateStopped      State = 5
	// StateWaitingClock: recovery is over but the system clock is not
	// synchronised yet; no sale is accepted until it is (order times and
	// the day's report depend on it).
	StateWaitingClock State = 6
)

func (s State) String() string {
	switch s {
	case StateStarting:
		return "STARTING"
	case StateIdle:
		return "IDLE"
	case StateAwaitingCode:
		return "AWAITING_CODE"
	case StateSubmitting:
		return "SUBMITTING"
	case StatePolling:
		return "POLLING"
	case StateStopped:
		return "STOPPED"
	case StateWaitingClock:
		return "WAITING_CLOCK"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

var laneMoves = map[State][]State{
	StateStarting:     {StateIdle, StatePolling, StateWaitingClock},
	StateWaitingClock: {StateIdle},
	StateIdle:         {StateAwaitingCode},
	StateAwaitingCode: {StateIdle, StateSubmitting},
	StateSubmitting:   {StatePolling, StateIdle},
	StatePolling:      {StateIdle, StatePolling, StateWaitingClock}, // after recovery, the clock may not be set yet
}

// InvalidTransitionError is returned for a lane move the state machine does
// not allow.
type InvalidTransitionError struct{ From, To State }

func (e InvalidTransitionError) Error() string {
	return fmt.Sprintf("invalid lane transition %s → %s", e.From, e.To)
}

func checkMove(from, to State) error {
	if to == StateStopped {
		return nil
	}
	for _, s := range laneMoves[from] {
		if s == to {
			return nil
		}
	}
	return InvalidTransitionError{from, to}
}

// Source names where an amount came from.
type Source string

// Amount sources.
const (
	SourceKeypad Source = "keypad"
	SourceECR    Source = "ecr"
	SourceDemo   Source = "demo"
)

// SaleRequest asks for a payment of Amount cents.
type SaleRequest struct {
	Amount    int64
	Currency  string // empty: the terminal's currency
	Source    Source
	ECRRef    string // the ECR's private reference, echoed in the result
	POSNumber string
	ECRType   string // the register's transaction type ("0", "4"), journaled for matching re-asks
	// Ticket is the asker's own number for this request, echoed in its
	// result, so a result is matched to the request that asked for it and
	// never to another one with the same (or a blank) reference.
	Ticket uint64
}

// Code is one scanned payment code.
type Code struct {
	Text   string
	Source string // device name, for logs
	At     time.Time
}

// Outcome is what a sale's result says.
type Outcome int

// The zero value is unknown, so a result nobody filled in never reads as
// approved.
const (
	OutcomeUnknown  Outcome = iota // not confirmed: never treat as paid
	OutcomeApproved                // the gateway said status 2 or 3
	OutcomeRefused                 // definitively not paid, or cancelled
)

func (o Outcome) String() string {
	switch o {
	case OutcomeApproved:
		return "approved"
	case OutcomeRefused:
		return "refused"
	}
	return "unknown"
}

// SaleResult is the answer for the ECR (or whoever asked for the sale).
type SaleResult struct {
	Request    SaleRequest
	Outcome    Outcome
	MchOrderNo string // empty when no order was created
	PayOrderID string
	Channel    string
	Message    string
	// Final is false for an interim answer (not confirmed yet); a final
	// result may follow once the order is settled.
	Final bool
	// At is when the order was created (wall clock, from the journal);
	// zero when no order was created.
	At time.Time
	// Seq is the order's journal sequence; zero when no order was created.
	Seq uint64
	// Taken: the register took this sale's final result (in this run or
	// a previous one), so the same request again is a new sale.
	Taken bool
	// RefundNo names the refund a register refund's answer speaks for.
	RefundNo string
}

// ScreenKind is what the customer display shows.
type ScreenKind int

// Screens, one per situation the customer or cashier must understand.
const (
	ScreenIdle ScreenKind = iota
	ScreenTyping
	ScreenAwaitingCode
	ScreenProcessing
	ScreenConfirmOnPhone
	ScreenApproved
	ScreenDeclined
	ScreenNotConfirmed
	ScreenUnsupported
	ScreenCodeUsed
	ScreenEnterAmountFirst
	ScreenOffline
	ScreenRefundDone
	ScreenRefundFailed
	ScreenCancelled
	ScreenRecovering
	ScreenOutOfService
	ScreenWaitingClock // the clock is not synchronised: no sale yet
	ScreenOverLimit    // the typed amount is over the lane's maximum (Amount: the limit)
)

var screenNames = [...]string{"idle", "typing", "awaiting_code", "processing", "confirm_on_phone", "approved",
	"declined", "not_confirmed", "unsupported", "code_used", "enter_amount_first", "offline", "refund_done",
	"refund_failed", "cancelled", "recovering", "out_of_service", "waiting_clock", "over_limit"}

func (k ScreenKind) String() string {
	if int(k) < len(screenNames) {
		return screenNames[k]
	}
	return fmt.Sprintf("screen(%d)", int(k))
}

// Screen is one screen's content; the display package lays it out.
type Screen struct {
	Kind     ScreenKind
	Amount   int64 // cents, when the screen shows one
	Currency string
	Wallet   string // wallet name, e.g. "WeChat Pay"
	Reason   string // short reason for declines and errors
}

// Beep is a beeper pattern.
type Beep int

// Beep patterns.
const (
	BeepAccepted Beep = iota // a click: code accepted
	BeepApproved             // one short tone
	BeepDeclined             // three short tones: declined or error
)

func (b Beep) String() string {
	return [...]string{"accepted", "approved", "declined"}[b]
}

// Consumer-side interfaces for everything the terminal drives.

var (
	_ Gateway = (*iotpay.Client)(nil)
	_ Journal = (*journal.Journal)(nil)
)

// Gateway is the IOTPay API; *iotpay.Client implements it.
type Gateway interface {
	CreateOrder(ctx context.Context, r iotpay.CreateRequest) iotpay.Result
	QueryOrder(ctx context.Context, q iotpay.QueryRequest) iotpay.Result
	RefundOrder(ctx context.Context, r iotpay.RefundRequest) iotpay.Result
}

// Journal is the durable store; *journal.Journal implements it.
type Journal interface {
	ArmOrder(ctx context.Context, a journal.Armed, number func(uint64) string) (journal.Order, error)
	AttachCode(ctx context.Context, no string, c journal.Code) (journal.Order, error)
	CodeUsed(ctx context.Context, hash string) (bool, error)
	FilterCodes()
	Transition(ctx context.Context, no string, from, to journal.State, u journal.Update) (journal.Order, error)
	Settle(ctx context.Context, no string, from, to journal.State, u journal.Update) (journal.Order, error)
	Sync(ctx context.Context) error
	Get(ctx context.Context, no string) (journal.Order, error)
	Find(ctx context.Context, id string) (journal.Order, error)
	OpenOrders(ctx context.Context) ([]journal.Order, error)
	LastByRef(ctx context.Context, ref string) (journal.Order, error)
	LastByRefAmount(ctx context.Context, ref string, amount int64) (journal.Order, error)
	LastPaid(ctx context.Context) (journal.Order, error)
	AddRefund(ctx context.Context, n journal.NewRefund, number func(uint64) string) (journal.Refund, error)
	FinishRefund(ctx context.Context, refundNo string, state journal.RefundState, msg string) (journal.Refund, error)
	Refunds(ctx context.Context, orderNo string) ([]journal.Refund, error)
	OpenRefunds(ctx context.Context) ([]journal.Refund, error)
	RecentECRRefund(ctx context.Context, ref string, amount int64, since time.Time) (journal.Refund, error)
	SettleRefund(ctx context.Context, refundNo string, done bool, msg string) (journal.Refund, error)
	MarkTaken(ctx context.Context, no string) error
	MarkRefundTaken(ctx context.Context, no string) error
	Secret() []byte
}

// Classifier maps a code to its wallet; *Wallets implements it.
type Classifier interface {
	Classify(code string) (WalletRule, bool)
	Name(channel string) string
}

// ScreenSink shows screens. Calls come from one goroutine and may block;
// the terminal never waits for them.
type ScreenSink interface{ Show(Screen) error }

// InstantScreenSink is a ScreenSink whose Show only records the screen
// for a goroutine of its own to draw: it never blocks and never fails.
// The lane calls it directly, one hand-off fewer between the gateway's
// answer and the display.
type InstantScreenSink interface {
	ScreenSink
	ShowsInstantly()
}

// BeepSink plays beeper patterns. Same contract as ScreenSink.
type BeepSink interface{ Beep(Beep) error }

// ResultSink receives sale results (the ECR link). Same contract.
type ResultSink interface{ Result(SaleResult) error }

// Observer is told about outcomes for metrics; every method must be cheap
// and non-blocking. Nil means none.
type Observer interface {
	SaleFinished(channel string, state journal.State)
	ScanRejected(reason string)
	GatewayCall(endpoint string, outcome iotpay.Outcome, d time.Duration)
	OutputFailed(output string)
	// Alert counts something an operator must look at: a gateway reply
	// that does not match its order, a gateway contradicting the journal,
	// an order still unknown after the reconcile window.
	Alert(kind string)
}

// Alert kinds.
const (
	AlertReplyMismatch   = "reply_mismatch"
	AlertGatewayConflict = "gateway_conflict"
	AlertUnresolved      = "unresolved_order"
	AlertLatePayment     = "late_payment"
)
