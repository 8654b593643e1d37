package journal

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
)

// A write transaction runs at the driver's level, on the journal's one
// connection (database/sql.Conn.Raw), with the driver's own prepared
// statements kept per connection. database/sql's Tx cost each of a sale's
// four commits two goroutines (its own watcher of the caller's context and
// the driver's, for BEGIN), a Stmt per statement, a Rows per read and its
// boxed arguments. BenchmarkSaleJournal: 19.1 KiB and 467 objects
// allocated per sale through database/sql, 8.2 KiB and 298 without;
// bench-e2e: about 0.1 ms less CPU per sale (of 1.0). Reads outside a
// write stay on database/sql.
//
// A stop (ctx) is checked before the commit, not watched during the
// statements, which take microseconds: a write the caller stopped rolls
// back whole, as before.

// rawConn is the journal's driver-level state for one connection.
type rawConn struct {
	dc                      any // the driver connection these statements belong to
	byStmt                  map[*sql.Stmt]driver.Stmt
	byText                  map[string]driver.Stmt
	begin, commit, rollback driver.Stmt
	// args and row are reused by every statement: one runs at a time.
	args []driver.NamedValue
	row  []driver.Value
}

// rawState holds the current rawConn; the pool may replace the connection
// (after a broken one), and the statements are prepared again on the new.
type rawState struct {
	mu    sync.Mutex
	conn  *rawConn
	texts map[*sql.Stmt]string // every prepared statement's SQL (statements, outboxStmts)
}

// register notes the SQL of a statement prepared on the pool, so that a
// write can prepare the same at the driver's level.
func (r *rawState) register(st *sql.Stmt, q string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.texts == nil {
		r.texts = map[*sql.Stmt]string{}
	}
	r.texts[st] = q
}

func (r *rawState) text(st *sql.Stmt) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q, ok := r.texts[st]
	return q, ok
}

// on returns the rawConn of driver connection dc, preparing its
// transaction statements the first time. (A replaced connection released
// its own when it closed.)
func (r *rawState) on(dc any) (*rawConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn != nil && r.conn.dc == dc {
		return r.conn, nil
	}
	c := &rawConn{dc: dc, byStmt: map[*sql.Stmt]driver.Stmt{}, byText: map[string]driver.Stmt{},
		args: make([]driver.NamedValue, 0, 16), row: make([]driver.Value, 0, 24)}
	var err error
	if c.begin, err = c.prepare("BEGIN IMMEDIATE"); err == nil {
		if c.commit, err = c.prepare("COMMIT"); err == nil {
			c.rollback, err = c.prepare("ROLLBACK")
		}
	}
	if err != nil {
		c.close()
		return nil, err
	}
	r.conn = c
	return c, nil
}

// release finalizes the statements of driver connection dc, which is
// about to close (journalConn.Close): SQLite keeps a connection with
// unfinalized statements open, a zombie with its descriptors and cache.
func (r *rawState) release(dc any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn != nil && r.conn.dc == dc {
		r.conn.close()
		r.conn = nil
	}
}

// sqliteConn is what database/sql uses of the driver's connection.
type sqliteConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// journalConnector makes the journal's connections: the driver's, with
// the journal's driver-level statements released when one closes. The
// pool closes a connection it finds broken, and after a read its caller
// cancelled mid-statement (the driver then reports it unusable).
type journalConnector struct {
	driver.Connector
	raw *rawState
}

func (c *journalConnector) Connect(ctx context.Context) (driver.Conn, error) {
	dc, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	sc, ok := dc.(sqliteConn)
	if !ok {
		dc.Close()
		return nil, fmt.Errorf("journal: the SQLite driver's connection (%T) lacks what the journal uses", dc)
	}
	return &journalConn{sqliteConn: sc, raw: c.raw}, nil
}

type journalConn struct {
	sqliteConn
	raw *rawState
}

func (c *journalConn) Close() error {
	c.raw.release(c)
	return c.sqliteConn.Close()
}

// Unwrap is the driver's own connection, for what the driver offers
// beyond database/sql.
func (c *journalConn) Unwrap() driver.Conn { return c.sqliteConn }

func (c *rawConn) prepare(q string) (driver.Stmt, error) {
	p, ok := c.dc.(driver.ConnPrepareContext)
	if !ok {
		return nil, errors.New("journal: the SQLite driver cannot prepare statements")
	}
	return p.PrepareContext(context.Background(), q)
}

func (c *rawConn) close() {
	for _, s := range c.byStmt {
		s.Close()
	}
	for _, s := range c.byText {
		s.Close()
	}
	for _, s := range []driver.Stmt{c.begin, c.commit, c.rollback} {
		if s != nil {
			s.Close()
		}
	}
	c.byStmt, c.byText = nil, nil
}

// wtx is one write transaction's handle on the connection.
type wtx struct {
	j *Journal
	c *rawConn
}

// stmt is the connection's driver statement for st (prepared on first use).
func (t *wtx) stmt(st *sql.Stmt) (driver.Stmt, error) {
	if s, ok := t.c.byStmt[st]; ok {
		return s, nil
	}
	q, ok := t.j.raw.text(st)
	if !ok {
		return nil, errors.New("journal: a statement without its SQL")
	}
	s, err := t.c.prepare(q)
	if err != nil {
		return nil, err
	}
	t.c.byStmt[st] = s
	return s, nil
}

// textStmt is the connection's driver statement for SQL text q.
func (t *wtx) textStmt(q string) (driver.Stmt, error) {
	if s, ok := t.c.byText[q]; ok {
		return s, nil
	}
	s, err := t.c.prepare(q)
	if err != nil {
		return nil, err
	}
	t.c.byText[q] = s
	return s, nil
}

// bind converts args as database/sql would, into the reused slice.
func (t *wtx) bind(args []any) ([]driver.NamedValue, error) {
	nv := t.c.args[:0]
	for i, a := range args {
		var v driver.Value
		switch a := a.(type) {
		case nil, int64, string, []byte, float64, time.Time:
			v = a
		case int:
			v = int64(a)
		case bool:
			// SQLite has no booleans: the columns hold 0 and 1.
			v = int64(0)
			if a {
				v = int64(1)
			}
		default:
			var err error
			if v, err = driver.DefaultParameterConverter.ConvertValue(a); err != nil {
				return nil, fmt.Errorf("argument %d: %w", i+1, err)
			}
		}
		nv = append(nv, driver.NamedValue{Ordinal: i + 1, Value: v})
	}
	t.c.args = nv
	return nv, nil
}

// exec runs st and returns the rows it changed.
func (t *wtx) exec(st *sql.Stmt, args ...any) (int64, error) {
	s, err := t.stmt(st)
	if err != nil {
		return 0, err
	}
	return t.run(s, args)
}

// execText runs SQL text q (prepared once per connection).
func (t *wtx) execText(q string, args ...any) (int64, error) {
	s, err := t.textStmt(q)
	if err != nil {
		return 0, err
	}
	return t.run(s, args)
}

func (t *wtx) run(s driver.Stmt, args []any) (int64, error) {
	nv, err := t.bind(args)
	if err != nil {
		return 0, err
	}
	e, ok := s.(driver.StmtExecContext)
	if !ok {
		return 0, errors.New("journal: the SQLite driver cannot execute statements")
	}
	res, err := e.ExecContext(context.Background(), nv)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// execScript runs several statements of SQL text at once (migrations).
func (t *wtx) execScript(q string) error {
	e, ok := t.c.dc.(driver.ExecerContext)
	if !ok {
		return errors.New("journal: the SQLite driver cannot execute a script")
	}
	_, err := e.ExecContext(context.Background(), q, nil)
	return err
}

// row runs st and returns its first row for Scan; no row scans as
// sql.ErrNoRows, as database/sql's QueryRow does. The row's values live
// in the connection's one buffer: Scan it before the next statement.
func (t *wtx) row(st *sql.Stmt, args ...any) *wrow {
	s, err := t.stmt(st)
	if err != nil {
		return &wrow{err: err}
	}
	return t.first(s, args)
}

// rowText is row for SQL text q.
func (t *wtx) rowText(q string, args ...any) *wrow {
	s, err := t.textStmt(q)
	if err != nil {
		return &wrow{err: err}
	}
	return t.first(s, args)
}

func (t *wtx) first(s driver.Stmt, args []any) *wrow {
	var vals []driver.Value
	err := t.each(s, args, func(v []driver.Value) error {
		vals = v
		return errStopRows
	})
	switch {
	case errors.Is(err, errStopRows):
		return &wrow{vals: vals}
	case err != nil:
		return &wrow{err: err}
	default:
		return &wrow{err: sql.ErrNoRows}
	}
}

// errStopRows ends each early.
var errStopRows = errors.New("stop")

// eachText calls fn with every row of SQL text q. The values are only
// good until fn returns.
func (t *wtx) eachText(q string, args []any, fn func(vals []driver.Value) error) error {
	s, err := t.textStmt(q)
	if err != nil {
		return err
	}
	return t.each(s, args, fn)
}

func (t *wtx) each(s driver.Stmt, args []any, fn func(vals []driver.Value) error) error {
	nv, err := t.bind(args)
	if err != nil {
		return err
	}
	q, ok := s.(driver.StmtQueryContext)
	if !ok {
		return errors.New("journal: the SQLite driver cannot query")
	}
	rows, err := q.QueryContext(context.Background(), nv)
	if err != nil {
		return err
	}
	err = eachRow(rows, &t.c.row, fn)
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	return err
}

func eachRow(rows driver.Rows, buf *[]driver.Value, fn func(vals []driver.Value) error) error {
	n := len(rows.Columns())
	if cap(*buf) < n {
		*buf = make([]driver.Value, n)
	}
	dest := (*buf)[:n]
	for {
		if err := rows.Next(dest); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if err := fn(dest); err != nil {
			return err
		}
	}
}

// wrow is one row, or why there is none.
type wrow struct {
	vals []driver.Value
	err  error
}

// Scan assigns the row's columns to dest, converting as database/sql
// does for the types the journal reads.
func (r *wrow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	if len(dest) != len(r.vals) {
		return fmt.Errorf("journal: %d columns scanned into %d values", len(r.vals), len(dest))
	}
	for i, d := range dest {
		if err := assign(d, r.vals[i]); err != nil {
			return fmt.Errorf("journal: column %d: %w", i+1, err)
		}
	}
	return nil
}

func assign(dest any, v driver.Value) error {
	switch d := dest.(type) {
	case *string:
		switch v := v.(type) {
		case string:
			*d = v
		case []byte:
			*d = string(v)
		case int64:
			*d = strconv.FormatInt(v, 10)
		case float64:
			*d = strconv.FormatFloat(v, 'g', -1, 64)
		default:
			return fmt.Errorf("%T into a string", v)
		}
		return nil
	case *sql.NullString:
		if v == nil {
			*d = sql.NullString{}
			return nil
		}
		d.Valid = true
		return assign(&d.String, v)
	case *sql.NullInt64:
		if v == nil {
			*d = sql.NullInt64{}
			return nil
		}
		d.Valid = true
		return assign(&d.Int64, v)
	case *int64:
		n, err := integer(v)
		*d = n
		return err
	case *int:
		n, err := integer(v)
		if int64(int(n)) != n {
			return fmt.Errorf("%d out of range for an int", n)
		}
		*d = int(n)
		return err
	case *uint64:
		n, err := integer(v)
		if n < 0 {
			return fmt.Errorf("%d into an unsigned integer", n)
		}
		*d = uint64(n)
		return err
	default:
		return fmt.Errorf("cannot scan into %T", dest)
	}
}

func integer(v driver.Value) (int64, error) {
	switch v := v.(type) {
	case int64:
		return v, nil
	case string:
		return strconv.ParseInt(v, 10, 64)
	case []byte:
		return strconv.ParseInt(string(v), 10, 64)
	case float64:
		if v == float64(int64(v)) {
			return int64(v), nil
		}
		return 0, fmt.Errorf("%v into an integer", v)
	default:
		return 0, fmt.Errorf("%T into an integer", v)
	}
}

// transact runs fn in one immediate transaction on the journal's
// connection and commits it, unless fn fails or ctx ends first: then it
// rolls back and nothing of it is on disk. synced says whether the WAL
// is fdatasync'd before it returns.
func (j *Journal) transact(ctx context.Context, op string, synced bool, fn func(t *wtx) error) error {
	if err := j.wal.err(); err != nil {
		// After a failed fsync nothing more is written: what the kernel
		// dropped cannot be told apart from what a later fsync covers.
		return storage(op, err)
	}
	conn, err := j.db.Conn(ctx)
	if err != nil {
		return failed(ctx, op, err)
	}
	defer conn.Close()
	var gen uint64
	var start time.Time
	err = conn.Raw(func(dc any) error {
		c, err := j.raw.on(dc)
		if err != nil {
			return storage(op, err)
		}
		t := &wtx{j: j, c: c}
		// Again holding the connection: every fsync runs while its writer
		// holds it, so a writer that waited for it sees a failure that
		// happened meanwhile.
		if err := j.wal.err(); err != nil {
			return storage(op, err)
		}
		// Inside the connection: commits reach the WAL in the order
		// durability sees them.
		gen = j.dur.begin(synced)
		// BEGIN IMMEDIATE waits up to busy_timeout for another process's
		// write lock (an operator's command) without watching ctx: a stop
		// then takes up to that long to end the write (as interrupted).
		// Watching it would cost every write a goroutine.
		if _, err := t.run(c.begin, nil); err != nil {
			return failed(ctx, op, err)
		}
		ferr := fn(t)
		if ferr == nil && ctx.Err() != nil {
			ferr = fmt.Errorf("%s: %w", op, ctx.Err())
		}
		if ferr != nil {
			if _, err := t.run(c.rollback, nil); err != nil {
				// The pool discards the connection (closing it rolls back
				// whatever may be left). After a refusal the transaction
				// was open, so this is a storage failure, and the refusal
				// is kept as text only: not a conflict to carry on from.
				// After a failed statement SQLite may have ended the
				// transaction itself (a full disk does): that failure,
				// with its cause, is the error.
				if isLogical(ferr) {
					return fmt.Errorf("%w (after: %v): %w", storage(op+" rollback", err), ferr, driver.ErrBadConn)
				}
				return fmt.Errorf("%w (rollback: %v): %w", failed(ctx, op, ferr), err, driver.ErrBadConn)
			}
			if isLogical(ferr) || Interrupted(ferr) {
				return ferr
			}
			return failed(ctx, op, ferr)
		}
		start = time.Now()
		if _, err := t.run(c.commit, nil); err != nil {
			// A COMMIT that fails leaves the transaction open when it was
			// busy; end it, and if that fails too, have the pool discard
			// the connection (closing it rolls back).
			if _, rerr := t.run(c.rollback, nil); rerr != nil {
				return fmt.Errorf("%w: %w", storage(op+" commit", err), driver.ErrBadConn)
			}
			return storage(op+" commit", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if synced && j.ownSync {
		// Not interruptible: the commit is done, and its caller must
		// learn whether it is durable. A failure is the disk's, and the
		// engine stops on it. (Without ownSync, SQLite's FULL fsynced
		// every commit before it became visible.)
		if err := j.wal.sync(); err != nil {
			return storage(op+" fsync", err)
		}
	}
	j.dur.committed(synced, gen)
	if synced && j.onCommit != nil {
		j.onCommit(time.Since(start))
	}
	j.commits.Add(1)
	if synced {
		j.synced.Add(1)
	}
	return nil
}
