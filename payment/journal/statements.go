package journal

import (
	"database/sql"
	"errors"
)

// statements are the journal's hot statements, prepared once at Open: SQL
// text is not parsed again for each sale.
type statements struct {
	list []*sql.Stmt

	nextOrderSeq, insertOrder, getOrder, getOrderByPay, codeUsed                               *sql.Stmt
	insertTransition, lastByRef, lastByRefAmount, lastPaid                                     *sql.Stmt
	nextRefundSeq, insertRefund, getRefund, finishRefund, refundOrderUpdate                    *sql.Stmt
	committedRefunds, orderForRefund, openRefunds, recentECRRefund, markTaken, markRefundTaken *sql.Stmt
	markInterrupted, moveOrder, attachArmed, codesAfter                                        *sql.Stmt
}

func prepare(db *sql.DB, raw *rawState) (*statements, error) {
	s := &statements{}
	var errs []error
	p := func(q string) *sql.Stmt {
		st, err := db.Prepare(q)
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		s.list = append(s.list, st)
		raw.register(st, q)
		return st
	}
	s.nextOrderSeq = p(`SELECT COALESCE(MAX(seq), 0) + 1 FROM orders`)
	s.insertOrder = p(`INSERT INTO orders(seq, mch_order_no, terminal_id, amount, currency, channel, code_masked, code_hash, source,
		ecr_ref, pos_number, ecr_type, state, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`)
	s.getOrder = p(`SELECT ` + orderCols + ` FROM orders WHERE mch_order_no = ?`)
	s.getOrderByPay = p(`SELECT ` + orderCols + ` FROM orders WHERE pay_order_id = ? AND pay_order_id <> '' ORDER BY seq DESC LIMIT 1`)
	s.codeUsed = p(`SELECT COUNT(*) FROM orders WHERE code_hash = ?`)
	// In the code index's order (a comparison on code_hash lets SQLite use
	// the partial index): the code filter's load reads it a chunk at a time.
	s.codesAfter = p(`SELECT code_hash FROM orders WHERE code_hash > ? ORDER BY code_hash LIMIT ?`)
	// moveOrder and attachArmed check the order's state and change it in
	// one statement, returning the row as it now is: a sale's commits do
	// not read the order first. No row means it is gone or was moved.
	s.moveOrder = p(`UPDATE orders SET state = ?, pay_order_id = CASE WHEN ? = '' THEN pay_order_id ELSE ? END,
		status = CASE WHEN ? < 0 THEN status ELSE ? END, message = ?, not_sent = (not_sent OR ?), interrupted = (interrupted OR ?),
		updated_at = ? WHERE mch_order_no = ? AND state = ? RETURNING ` + orderCols)
	s.attachArmed = p(`UPDATE orders SET channel = ?, code_masked = ?, code_hash = ?, state = 'SUBMITTING', updated_at = ?
		WHERE mch_order_no = ? AND state = 'ARMED' RETURNING ` + orderCols)
	s.insertTransition = p(`INSERT INTO transitions(order_seq, n, at, from_state, to_state, status, detail)
		VALUES (?, (SELECT COALESCE(MAX(n), 0) + 1 FROM transitions WHERE order_seq = ?), ?, ?, ?, ?, ?)`)
	s.lastByRef = p(`SELECT ` + orderCols + ` FROM orders WHERE ecr_ref = ? AND ecr_ref <> '' ORDER BY seq DESC LIMIT 1`)
	s.lastByRefAmount = p(`SELECT ` + orderCols + ` FROM orders WHERE ecr_ref = ? AND ecr_ref <> '' AND amount = ? ORDER BY seq DESC LIMIT 1`)
	s.lastPaid = p(`SELECT ` + orderCols + ` FROM orders WHERE state = 'PAID' ORDER BY seq DESC LIMIT 1`)
	s.nextRefundSeq = p(`SELECT COALESCE(MAX(seq), 0) + 1 FROM refunds`)
	s.insertRefund = p(`INSERT INTO refunds(seq, mch_refund_no, mch_order_no, amount, state, source, ecr_ref, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)`)
	s.getRefund = p(`SELECT mch_order_no, amount, state, source, ecr_ref, created_at FROM refunds WHERE mch_refund_no = ?`)
	s.finishRefund = p(`UPDATE refunds SET state = ?, message = ?, updated_at = ? WHERE mch_refund_no = ?`)
	s.refundOrderUpdate = p(`UPDATE orders SET refunded = refunded + ?, updated_at = ? WHERE mch_order_no = ?`)
	s.committedRefunds = p(`SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE mch_order_no = ? AND state <> 'FAILED'`)
	s.orderForRefund = p(`SELECT seq, state, amount FROM orders WHERE mch_order_no = ?`)
	s.openRefunds = p(refundCols + ` WHERE state IN ('SENT','UNKNOWN') ORDER BY seq`)
	s.recentECRRefund = p(refundCols + ` WHERE source = 'ecr' AND ecr_ref = ? AND amount = ? AND created_at >= ? AND ecr_taken = 0 ORDER BY seq DESC LIMIT 1`)
	s.markTaken = p(`UPDATE orders SET ecr_taken = 1 WHERE mch_order_no = ?`)
	s.markRefundTaken = p(`UPDATE refunds SET ecr_taken = 1 WHERE mch_refund_no = ?`)
	if len(errs) > 0 {
		s.close()
		return nil, errors.Join(errs...)
	}
	return s, nil
}

func (s *statements) close() {
	for _, st := range s.list {
		st.Close()
	}
}
