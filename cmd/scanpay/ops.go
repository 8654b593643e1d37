package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/scanpay/scanpay/display"
	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/journal"
)

// openJournal opens the configured journal for the operator commands.
func (c *CLI) openJournal(ctx context.Context, path string, readOnly bool) (*journal.Journal, int) {
	cfg, ok := c.loadConfig(ctx, path)
	if !ok {
		return nil, exitUsage
	}
	j, err := journal.Open(cfg.Journal.Path, journal.Options{ReadOnly: readOnly})
	if err != nil {
		c.errorf("%v", err)
		return nil, exitFailure
	}
	return j, -1
}

func checkFormat(f string) error {
	switch f {
	case "table", "csv", "json":
		return nil
	}
	return fmt.Errorf("--format %q must be table, csv or json", f)
}

// dayRange reads --from and --to (inclusive days, local time); both
// default to today.
func dayRange(from, to string, now time.Time) (time.Time, time.Time, error) {
	return dayRangeIn(from, to, now, time.Local)
}

// dayRangeIn is dayRange for days in loc (head office reports in the
// shops' zone).
func dayRangeIn(from, to string, now time.Time, loc *time.Location) (time.Time, time.Time, error) {
	now = now.In(loc)
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, loc)
	parse := func(s string, def time.Time) (time.Time, error) {
		if s == "" {
			return def, nil
		}
		t, err := time.ParseInLocation("2006-01-02", s, loc)
		if err != nil {
			return t, fmt.Errorf("%q is not a date like 2026-11-27", s)
		}
		return t, nil
	}
	f, err := parse(from, today)
	if err != nil {
		return f, f, err
	}
	t, err := parse(to, f)
	if err != nil {
		return f, t, err
	}
	if t.Before(f) {
		return f, t, errors.New("--to is before --from")
	}
	return f, t.AddDate(0, 0, 1), nil
}

func (c *CLI) report(ctx context.Context, args []string) int {
	fs, path := c.flags("report", "", "Totals per day, channel and outcome for orders created from --from to --to\n(both days included; default today).")
	from := fs.String("from", "", "first day, YYYY-MM-DD")
	to := fs.String("to", "", "last day, YYYY-MM-DD (default: --from)")
	format := fs.String("format", "table", "table, csv or json")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	start, end, err := dayRange(*from, *to, time.Now())
	if err == nil {
		err = checkFormat(*format)
	}
	if err != nil {
		c.errorf("%v", err)
		return exitUsage
	}
	j, code := c.openJournal(ctx, *path, true)
	if j == nil {
		return code
	}
	defer j.Close()
	totals, err := j.DailyTotals(ctx, start, end, time.Local)
	if err != nil {
		c.errorf("%v", err)
		return exitFailure
	}
	open, err := j.OpenOrders(ctx)
	if err != nil {
		c.errorf("%v", err)
		return exitFailure
	}
	var paidCount int
	var paidAmount, refunded int64
	for _, t := range totals {
		if t.State == journal.StatePaid || t.State == journal.StateLatePaid {
			paidCount += t.Count
			paidAmount += t.Amount
		}
		refunded += t.Refunded
	}
	switch *format {
	case "json":
		type line struct {
			Day      string `json:"day"`
			Channel  string `json:"channel"`
			Outcome  string `json:"outcome"`
			Currency string `json:"currency"`
			Count    int    `json:"count"`
			Amount   int64  `json:"amount"`
			Refunded int64  `json:"refunded"`
		}
		doc := struct {
			From       string `json:"from"`
			To         string `json:"to"`
			Totals     []line `json:"totals"`
			PaidCount  int    `json:"paidCount"`
			PaidAmount int64  `json:"paidAmount"`
			Refunded   int64  `json:"refunded"`
			OpenOrders int    `json:"openOrders"`
		}{From: start.Format("2006-01-02"), To: end.AddDate(0, 0, -1).Format("2006-01-02"), Totals: []line{},
			PaidCount: paidCount, PaidAmount: paidAmount, Refunded: refunded, OpenOrders: len(open)}
		for _, t := range totals {
			doc.Totals = append(doc.Totals, line{t.Day, t.Channel, t.State.String(), t.Currency, t.Count, t.Amount, t.Refunded})
		}
		return c.writeJSON(doc)
	case "csv":
		w := csv.NewWriter(c.Stdout)
		w.Write([]string{"day", "channel", "outcome", "currency", "count", "amount_cents", "refunded_cents"})
		for _, t := range totals {
			w.Write([]string{t.Day, t.Channel, t.State.String(), t.Currency, strconv.Itoa(t.Count), strconv.FormatInt(t.Amount, 10), strconv.FormatInt(t.Refunded, 10)})
		}
		w.Flush()
		return exitOK
	}
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "DAY\tCHANNEL\tOUTCOME\tCOUNT\tAMOUNT\tREFUNDED\t")
	for _, t := range totals {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t\n", t.Day, t.Channel, t.State, t.Count, display.Money(t.Amount), display.Money(t.Refunded))
	}
	tw.Flush()
	fmt.Fprintf(c.Stdout, "\nPaid: %d sale(s), %s; refunded %s; %d order(s) open (see scanpay orders --open)\n",
		paidCount, display.Money(paidAmount), display.Money(refunded), len(open))
	return exitOK
}

func (c *CLI) writeJSON(v any) int {
	enc := json.NewEncoder(c.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		c.errorf("%v", err)
		return exitFailure
	}
	return exitOK
}

// orderJSON is the orders listing's JSON form (architecture.md contract).
type orderJSON struct {
	MchOrderNo    string `json:"mchOrderNo"`
	Amount        int64  `json:"amount"`
	Currency      string `json:"currency"`
	Channel       string `json:"channel"`
	State         string `json:"state"`
	PayOrderID    string `json:"payOrderId"`
	CreatedAt     string `json:"createdAt"`
	UpdatedAt     string `json:"updatedAt"`
	Refunded      int64  `json:"refunded"`
	Message       string `json:"message"`
	GatewayStatus int    `json:"gatewayStatus"`
	TerminalID    string `json:"terminalId"`
	Source        string `json:"source"`
	ECRRef        string `json:"ecrRef"`
	Code          string `json:"code"`
	// Interrupted: a restart interrupted the sale, so a late payment of it
	// is left to the operator (the customer may have been told approved).
	Interrupted bool `json:"interrupted"`
}

func toJSON(o journal.Order) orderJSON {
	return orderJSON{MchOrderNo: o.MchOrderNo, Amount: o.Amount, Currency: o.Currency, Channel: o.Channel, State: o.State.String(),
		PayOrderID: o.PayOrderID, CreatedAt: o.CreatedAt.Format(time.RFC3339), UpdatedAt: o.UpdatedAt.Format(time.RFC3339),
		Refunded: o.Refunded, Message: o.Message, GatewayStatus: o.Status, TerminalID: o.TerminalID, Source: o.Source,
		ECRRef: o.ECRRef, Code: o.CodeMasked, Interrupted: o.Interrupted}
}

// orderNote is the NOTE column: the journal's message, and for a late
// payment that a restart interrupted and nobody refunded yet, what the
// operator must do (the lane never refunds it by itself).
func orderNote(o journal.Order) string {
	if o.Interrupted && o.State == journal.StateLatePaid && o.Refunded < o.Amount {
		return strings.TrimSpace(o.Message + " interrupted by a restart: check the receipt, then scanpay refund if the customer paid twice")
	}
	return o.Message
}

func (c *CLI) orders(ctx context.Context, args []string) int {
	fs, path := c.flags("orders", "", "Lists orders, oldest first. --open lists what needs attention: orders not\nsettled yet and late payments not refunded.")
	open := fs.Bool("open", false, "only unsettled orders and late payments to refund")
	state := fs.String("state", "", "only this state: SUBMITTING, POLLING, PAID, DECLINED, UNCONFIRMED, LATE_PAID")
	from := fs.String("from", "", "created on or after this day, YYYY-MM-DD")
	to := fs.String("to", "", "created on or before this day, YYYY-MM-DD")
	format := fs.String("format", "table", "table, csv or json")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if err := checkFormat(*format); err != nil {
		c.errorf("%v", err)
		return exitUsage
	}
	var filter journal.Filter
	if *state != "" {
		s, err := journal.ParseState(strings.ToUpper(*state))
		if err != nil {
			c.errorf("%v", err)
			return exitUsage
		}
		filter.States = []journal.State{s}
	}
	if *from != "" || *to != "" {
		var err error
		f, t := *from, *to
		if f == "" {
			f = "2000-01-01"
		}
		if t == "" {
			t = time.Now().Format("2006-01-02")
		}
		if filter.From, filter.To, err = dayRange(f, t, time.Now()); err != nil {
			c.errorf("%v", err)
			return exitUsage
		}
	}
	j, code := c.openJournal(ctx, *path, true)
	if j == nil {
		return code
	}
	defer j.Close()
	var list []journal.Order
	var err error
	if *open {
		list, err = j.OpenOrders(ctx)
	} else {
		list, err = j.Orders(ctx, filter)
	}
	if err != nil {
		c.errorf("%v", err)
		return exitFailure
	}
	switch *format {
	case "json":
		out := make([]orderJSON, 0, len(list))
		for _, o := range list {
			out = append(out, toJSON(o))
		}
		return c.writeJSON(out)
	case "csv":
		w := csv.NewWriter(c.Stdout)
		w.Write([]string{"mchOrderNo", "createdAt", "state", "channel", "amount_cents", "currency", "refunded_cents", "payOrderId", "ecrRef", "message"})
		for _, o := range list {
			w.Write([]string{o.MchOrderNo, o.CreatedAt.Format(time.RFC3339), o.State.String(), o.Channel, strconv.FormatInt(o.Amount, 10),
				o.Currency, strconv.FormatInt(o.Refunded, 10), o.PayOrderID, o.ECRRef, o.Message})
		}
		w.Flush()
		return exitOK
	}
	printOrders(c.Stdout, list)
	return exitOK
}

func printOrders(w io.Writer, list []journal.Order) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ORDER\tCREATED\tSTATE\tCHANNEL\tAMOUNT\tREFUNDED\tIOTPAY ORDER\tNOTE")
	for _, o := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", o.MchOrderNo, o.CreatedAt.Local().Format("2006-01-02 15:04:05"), o.State,
			o.Channel, display.Money(o.Amount), display.Money(o.Refunded), o.PayOrderID, orderNote(o))
	}
	tw.Flush()
	if len(list) == 0 {
		fmt.Fprintln(w, "(no orders)")
	}
}

// gatewayClient builds a client from the config for query and refund.
func (c *CLI) gatewayClient(ctx context.Context, path string) (*iotpay.Client, *journal.Journal, string, int) {
	cfg, ok := c.loadConfig(ctx, path)
	if !ok {
		return nil, nil, "", exitUsage
	}
	key, _, err := cfg.LoadKey(c.Getenv)
	if err != nil {
		c.errorf("%v", err)
		return nil, nil, "", exitUsage
	}
	client, err := iotpay.New(gatewayConfig(cfg, key, nil))
	if err != nil {
		c.errorf("%v", err)
		return nil, nil, "", exitUsage
	}
	j, err := journal.Open(cfg.Journal.Path, journal.Options{ReadOnly: false})
	if err != nil {
		c.errorf("%v", err)
		return nil, nil, "", exitFailure
	}
	return client, j, cfg.Terminal.ID, -1
}

func (c *CLI) query(ctx context.Context, args []string) int {
	fs, path := c.flags("query", " ORDER", "Asks IOTPay for an order's status (ORDER is our order number or IOTPay's)\nand records a final answer in the journal: an unsettled order becomes PAID or\nDECLINED, an unconfirmed one LATE_PAID or DECLINED.")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	client, j, _, code := c.gatewayClient(ctx, *path)
	if client == nil {
		return code
	}
	defer j.Close()
	o, err := j.Find(ctx, fs.Arg(0))
	if err != nil {
		c.errorf("%v", err)
		return exitFailure
	}
	res := client.QueryOrder(ctx, iotpay.QueryRequest{MchOrderNo: o.MchOrderNo})
	fmt.Fprintf(c.Stdout, "order %s: gateway says %s", o.MchOrderNo, res.Outcome)
	if res.Status >= 0 {
		fmt.Fprintf(c.Stdout, " (status %d)", res.Status)
	}
	if res.Err != nil {
		fmt.Fprintf(c.Stdout, ": %s", res.Err.Msg)
	}
	fmt.Fprintln(c.Stdout)
	// The same rule as the lane and the reconciler: a settled order only
	// has its facts (IOTPay's order id) refreshed, except a late payment.
	d := payment.Decide(o, "query_order", res, payment.Facts{})
	if d.Mismatch != "" {
		c.errorf("the gateway's reply does not match order %s (%s): nothing recorded; check it in the IOTPay portal", o.MchOrderNo, d.Mismatch)
		return exitFailure
	}
	if d.Conflict != "" {
		c.errorf("warning: %s for order %s: check it in the IOTPay portal", d.Conflict, o.MchOrderNo)
	}
	to := d.To
	if to == 0 {
		to = o.State
	}
	newFacts := d.Update.PayOrderID != "" && d.Update.PayOrderID != o.PayOrderID || d.Update.Status >= 0 && d.Update.Status != o.Status
	if to != o.State || newFacts && res.Outcome != iotpay.OutcomeUnknown {
		u := d.Update
		if to != o.State {
			u.Message = strings.TrimSpace(u.Message + " (scanpay query)")
		}
		moved, err := j.Transition(ctx, o.MchOrderNo, o.State, to, u)
		if err != nil {
			c.errorf("%v", err)
			return exitFailure
		}
		if moved.State != o.State {
			fmt.Fprintf(c.Stdout, "journal updated: %s\n", moved.State)
		} else {
			fmt.Fprintf(c.Stdout, "journal updated: IOTPay order %s, status %d\n", moved.PayOrderID, moved.Status)
		}
		o = moved
	}
	printOrders(c.Stdout, []journal.Order{o})
	if res.Outcome == iotpay.OutcomeUnknown {
		return exitFailure
	}
	return exitOK
}

func (c *CLI) refund(ctx context.Context, args []string) int {
	fs, path := c.flags("refund", " ORDER", "Refunds a paid order (ORDER is our order number or IOTPay's): all that is\nleft, or --amount cents. The refund is journaled before it is sent. A refund\nwhose reply was lost is UNKNOWN: check it in IOTPay's portal, then record what\nhappened with --settle REFUND --done or --failed.")
	amount := fs.Int64("amount", 0, "cents to refund (default: all that is left)")
	settle := fs.String("settle", "", "record the outcome of an UNKNOWN refund (its refund number)")
	done := fs.Bool("done", false, "with --settle: the refund went through")
	failed := fs.Bool("failed", false, "with --settle: the refund did not go through")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *settle != "" {
		if *done == *failed || fs.NArg() != 0 {
			c.errorf("--settle needs exactly one of --done and --failed")
			return exitUsage
		}
		j, code := c.openJournal(ctx, *path, false)
		if j == nil {
			return code
		}
		defer j.Close()
		r, err := (&payment.Refunder{Journal: j}).Resolve(ctx, *settle, *done)
		if err != nil {
			c.errorf("%v", err)
			return exitFailure
		}
		fmt.Fprintf(c.Stdout, "refund %s of order %s recorded as %s\n", r.MchRefundNo, r.MchOrderNo, r.State)
		return exitOK
	}
	if fs.NArg() != 1 || *amount < 0 {
		fs.Usage()
		return exitUsage
	}
	client, j, tid, code := c.gatewayClient(ctx, *path)
	if client == nil {
		return code
	}
	defer j.Close()
	r, err := (&payment.Refunder{TerminalID: tid, Gateway: client, Journal: j}).Refund(ctx,
		payment.RefundRequest{ID: fs.Arg(0), Amount: *amount, Source: journal.RefundByOperator})
	if err != nil {
		c.errorf("%v", err)
		return exitFailure
	}
	fmt.Fprintf(c.Stdout, "refund %s of order %s for %s: %s", r.MchRefundNo, r.MchOrderNo, display.Money(r.Amount), r.State)
	if r.Message != "" {
		fmt.Fprintf(c.Stdout, " (%s)", r.Message)
	}
	fmt.Fprintln(c.Stdout)
	if r.State != journal.RefundDone {
		return exitFailure
	}
	return exitOK
}
