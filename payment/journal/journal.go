// Package journal is scanpay's durable order journal: SQLite through
// modernc.org/sqlite (no cgo), WAL. A write is either synced (its commit
// is fdatasync'd before it returns) or unsynced (the next synced commit
// makes it durable); the engine's rules say which each write is. An
// append-only transition log makes each sale auditable. Any
// storage error is returned wrapped in ErrStorage, which the engine treats
// as fatal: it never carries on with state it could not save.
package journal

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"modernc.org/sqlite" // also registers the "sqlite" driver
)

// Errors callers branch on. Anything else from a write is wrapped in
// ErrStorage.
var (
	ErrStorage           = errors.New("journal storage failure")
	ErrNotFound          = errors.New("no such order")
	ErrCodeUsed          = errors.New("payment code already used")
	ErrStateChanged      = errors.New("order state changed meanwhile")
	ErrInvalidTransition = errors.New("invalid order state transition")
	ErrRefundTooLarge    = errors.New("refund exceeds the refundable amount")
	ErrNotRefundable     = errors.New("order is not paid")
	// ErrLocked: another process holds the journal (a second daemon, or a
	// long operator command). Not damage: wait, or stop the other process.
	ErrLocked = errors.New("journal is locked by another process")
)

// Options tune Open.
type Options struct {
	// MaxPages caps the database size in pages (tests use it to simulate
	// a full disk); 0 means no cap.
	MaxPages int
	// ReadOnly opens an existing journal without write access (reports).
	ReadOnly bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// OnCommit, when set, is told how long each synced commit (with its
	// fsync) took; metrics use it, and the fleet publisher's nudge (what
	// an unsynced commit wrote waits for the next synced one anyway).
	OnCommit func(time.Duration)
	// TrackCleanStop is the daemon's: the full integrity read at Open is
	// skipped when the journal was closed cleanly (the mark is cleared
	// while it is open and set again by Close), so READY does not wait on
	// a read of the whole file. After a crash or power cut it runs.
	// CheckIntegrity does the full read in the background.
	TrackCleanStop bool

	// Exclusive is the daemon's: one process at a time runs a lane on the
	// journal. Open takes an flock on PATH.lock, which the kernel releases
	// when the process ends, however it ends; a second daemon gets
	// ErrLocked. Operator commands do not take it. (The code filter, among
	// others, counts on this lane being the only one attaching codes.)
	Exclusive bool

	// OnCodeFilter, when set, is told how each load of the code filter
	// (FilterCodes) ended: the codes it read and how long it took, or why
	// it failed (it is tried again later; meanwhile checks read the index).
	OnCodeFilter func(codes int, took time.Duration, err error)

	// codeChunk is the code filter's load chunk; tests make it small.
	codeChunk int
	// codeRetry is the first wait before a failed load is tried again.
	codeRetry time.Duration
}

// Journal is an open journal. It is safe for concurrent use.
type Journal struct {
	db      *sql.DB
	path    string
	now     func() time.Time
	commits atomic.Int64
	synced  atomic.Int64 // commits made with their own fsync
	dur     durability
	wal     walSync // fsyncs the WAL after a synced commit (wal.go)
	// ownSync: this journal (the daemon's, Options.Exclusive) commits with
	// synchronous=NORMAL and fsyncs its synced commits itself; any other
	// commits with FULL.
	ownSync   bool
	raw       rawState // writes at the driver's level (wtx.go)
	onCommit  func(time.Duration)
	st        *statements
	fleet     atomic.Pointer[fleetSetting] // the outbox's switch (outbox.go)
	trackStop bool
	unclean   atomic.Bool // Close must not mark the journal clean
	readOnly  bool
	// CheckedAtOpen reports whether Open read the whole file (quick_check);
	// false after a clean stop with TrackCleanStop.
	CheckedAtOpen bool

	// codes answers most "is this code used?" checks without a read
	// (codefilter.go) once FilterCodes has loaded it; nil when read-only.
	// loadStop and loadDone end and wait for that background load.
	codes     *codeFilter
	codeChunk int
	codeRetry time.Duration
	onCodes   func(int, time.Duration, error)
	loadMu    sync.Mutex
	loadStop  context.CancelFunc
	loadDone  chan struct{}
	closed    bool

	lock *os.File // held while open (Options.Exclusive)

	// The code secret, from its own file (secret.go); secretRenewed: a
	// new one was made for a journal that has orders.
	secret        []byte
	secretRenewed bool
}

// Open opens the journal at path, creating it when the file does not
// exist. An existing file that fails quick_check, or that holds no scanpay
// schema, is refused with an error naming the file; it is never recreated.
func Open(path string, opts Options) (*Journal, error) {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	var lock *os.File
	if opts.Exclusive && !opts.ReadOnly {
		var err error
		if lock, err = lockLane(path); err != nil {
			return nil, err
		}
	}
	j, err := open(path, opts, now)
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		return nil, err
	}
	j.lock = lock
	return j, nil
}

// lockLane takes the daemon's lock on the journal at path. It is a file of
// its own: an flock on the journal itself would be released with any other
// descriptor of it that SQLite closes.
func lockLane(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("journal directory %s: %w", filepath.Dir(path), err)
	}
	f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock journal %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s (another scanpay is running the lane on it: stop it first, e.g. systemctl stop scanpay)", ErrLocked, path)
		}
		return nil, fmt.Errorf("lock journal %s: %w", path, err)
	}
	return f, nil
}

func open(path string, opts Options, now func() time.Time) (*Journal, error) {
	fi, statErr := os.Stat(path)
	switch {
	case statErr == nil && fi.Size() == 0:
		// Journals are created complete and renamed into place, so an
		// empty file is damage, not a new journal.
		return nil, fmt.Errorf("journal %s is damaged (empty file): refusing to start; keep the file for recovery and restore it from a backup or ask support", path)
	case errors.Is(statErr, os.ErrNotExist):
		if opts.ReadOnly {
			return nil, fmt.Errorf("journal %s does not exist", path)
		}
		if err := create(path); err != nil {
			return nil, err
		}
	case statErr != nil:
		return nil, fmt.Errorf("journal %s: %w", path, statErr)
	}
	j := &Journal{path: path, now: now, onCommit: opts.OnCommit, trackStop: opts.TrackCleanStop && !opts.ReadOnly, readOnly: opts.ReadOnly,
		ownSync: opts.Exclusive && !opts.ReadOnly}
	connector, err := sqlite.NewConnector(dsn(path, opts, j.ownSync))
	if err != nil {
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	db := sql.OpenDB(&journalConnector{Connector: connector, raw: &j.raw})
	j.db = db
	// One connection serialises this process's writers; busy_timeout
	// covers a CLI process writing at the same time.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	fail := func(err error) (*Journal, error) {
		if j.st != nil {
			j.st.close()
		}
		db.Close()
		j.wal.close()
		return nil, err
	}
	if j.ownSync {
		// Before check: a migration's commits are synced.
		if err := j.findWAL(); err != nil {
			return fail(fmt.Errorf("open journal %s: %w", path, err))
		}
	}
	if err := j.check(opts); err != nil {
		return fail(err)
	}
	if j.st, err = prepare(db, &j.raw); err != nil {
		return fail(fmt.Errorf("open journal %s: %w", path, err))
	}
	if err := j.loadFleet(); err != nil {
		return fail(fmt.Errorf("open journal %s: %w", path, err))
	}
	if j.trackStop {
		// Synced: a power cut must find the journal marked open, or the
		// next start would skip the full check an unclean stop calls for.
		_, err := db.Exec(`INSERT OR REPLACE INTO meta(key, value) VALUES ('clean_stop', '0')`)
		if err == nil && j.ownSync {
			err = j.wal.sync()
		}
		if err != nil {
			return fail(storage("mark open", err))
		}
	}
	if !opts.ReadOnly {
		j.codes = newCodeFilter()
		j.codeChunk = cmp.Or(opts.codeChunk, codeLoadChunk)
		j.codeRetry = cmp.Or(opts.codeRetry, codeLoadRetry)
		j.onCodes = opts.OnCodeFilter
	}
	return j, nil
}

// FilterCodes starts loading the code hashes on disk into the code filter
// in the background, once; until the load completes, CodeUsed reads the
// index. The daemon calls it once it is READY: on a large journal the
// load reads the whole code index, and start-up does not wait for it.
// Close stops it. A read-only journal has no filter.
func (j *Journal) FilterCodes() {
	j.loadMu.Lock()
	defer j.loadMu.Unlock()
	if j.codes == nil || j.loadDone != nil || j.closed {
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	j.loadStop, j.loadDone = stop, done
	go func() {
		defer stop()
		defer close(done)
		// Whoever was woken with it (the daemon's READY) goes first.
		runtime.Gosched()
		j.loadCodesUntilDone(ctx)
	}()
}

// loadCodesUntilDone loads the code filter, trying again after a failure
// (with a growing wait, up to codeLoadRetryMax) until it loads or ctx
// ends. Until then every check reads the index, as before the filter.
func (j *Journal) loadCodesUntilDone(ctx context.Context) {
	wait := j.codeRetry
	for {
		start := time.Now()
		n, err := j.loadCodes(ctx, j.codeChunk)
		if ctx.Err() != nil {
			return // closed
		}
		if j.onCodes != nil {
			j.onCodes(n, time.Since(start), err)
		}
		if err == nil {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, codeLoadRetryMax)
	}
}

// CodesFiltered reports whether the code filter has loaded and answers
// CodeUsed for unused codes without a read.
func (j *Journal) CodesFiltered() bool { return j.codes != nil && j.codes.complete.Load() }

func dsn(path string, opts Options, ownSync bool) string {
	// NORMAL for the daemon's lane: a commit does not fsync inside SQLite;
	// a synced write fdatasyncs the WAL itself after its commit (wal.go),
	// so that unsynced writes need not switch the connection's setting.
	// Checkpoints still fsync the WAL before they copy it and the
	// database file after. FULL for every other process (operator
	// commands, which make no unsynced write): their commits are durable
	// before anyone can read them, as the daemon's fleet publisher, which
	// holds back only the daemon's own undurable events, needs.
	sync := "_pragma=synchronous(FULL)"
	if ownSync {
		sync = "_pragma=synchronous(NORMAL)"
	}
	q := []string{
		"_pragma=busy_timeout(5000)",
		"_pragma=foreign_keys(1)",
		sync,
		// A bounded page cache (256 KiB): the journal's hot pages are few,
		// the file stays in the kernel's page cache anyway (SQLite's own
		// copy is mostly a second one), and the lane's memory budget is
		// small. On a journal of 100 000 orders a sale costs the same CPU
		// with 256 as with 512 KiB; the lane's RSS is 0.4 MiB lower.
		"_pragma=cache_size(-256)",
		"_txlock=immediate",
	}
	if opts.ReadOnly {
		q = append(q, "mode=ro")
	} else {
		q = append(q, "_pragma=journal_mode(WAL)")
	}
	if opts.MaxPages > 0 {
		q = append(q, fmt.Sprintf("_pragma=max_page_count(%d)", opts.MaxPages))
	}
	return "file:" + path + "?" + strings.Join(q, "&")
}

// create builds a new journal beside path and renames it into place, so a
// crash during creation never leaves an empty file that would later pass
// for a journal.
func create(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create journal directory %s: %w", dir, err)
	}
	tmp := path + ".new"
	_ = os.Remove(tmp)
	// 2 KiB pages: a sale's commits rewrite the same dozen or so pages,
	// and smaller pages halve what each one writes to the WAL and fsyncs,
	// which is less CPU and less wear on a Pi's SD card. (An existing
	// journal keeps its page size.)
	db, err := sql.Open("sqlite", "file:"+tmp+"?_pragma=page_size(2048)&_pragma=synchronous(FULL)&_pragma=journal_mode(DELETE)")
	if err != nil {
		return fmt.Errorf("create journal %s: %w", path, err)
	}
	// The code secret is not in the journal: see secret.go.
	stmts := schema + outboxSchema + takenSchema + fmt.Sprintf(`INSERT INTO meta(key, value) VALUES
		('schema_version', '%d'), ('clean_stop', '1');`, SchemaVersion)
	_, err = db.Exec(stmts)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("create journal %s: %w", path, err)
	}
	if err := syncFile(tmp); err != nil {
		return fmt.Errorf("create journal %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fmt.Errorf("create journal %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("create journal %s: %w", path, err)
	}
	return syncFile(dir)
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func (j *Journal) check(opts Options) error {
	damaged := func(err error) error {
		if isBusy(err) {
			return fmt.Errorf("%w: %s (is scanpay or an operator command already using it? wait and try again)", ErrLocked, j.path)
		}
		return fmt.Errorf("journal %s is damaged (%v): refusing to start; keep the file for recovery and restore it from a backup or ask support", j.path, err)
	}
	if !opts.ReadOnly {
		var mode string
		if err := j.db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
			return damaged(err)
		}
	}
	clean := false
	if j.trackStop {
		var v string
		// A journal from before the mark (or never closed) is not clean.
		if err := j.db.QueryRow(`SELECT value FROM meta WHERE key = 'clean_stop'`).Scan(&v); err == nil {
			clean = v == "1"
		} else if isBusy(err) {
			return damaged(err)
		}
	}
	if !clean {
		if err := quickCheck(j.db); err != nil {
			return damaged(err)
		}
		j.CheckedAtOpen = true
	}
	var version int
	if err := j.db.QueryRow(`SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&version); err != nil {
		return damaged(fmt.Errorf("no scanpay schema: %w", err))
	}
	if version > SchemaVersion {
		return fmt.Errorf("journal %s has schema version %d, newer than this scanpay understands (%d): install the newer scanpay", j.path, version, SchemaVersion)
	}
	if version < SchemaVersion {
		if opts.ReadOnly {
			return fmt.Errorf("journal %s has schema version %d: start the scanpay service once to upgrade it", j.path, version)
		}
		if err := j.migrate(version); err != nil {
			if isBusy(err) {
				return fmt.Errorf("%w: %s (is scanpay already running?)", ErrLocked, j.path)
			}
			return fmt.Errorf("upgrade journal %s from schema %d: %w", j.path, version, err)
		}
	}
	if opts.ReadOnly {
		return nil // reports and lists hash no codes
	}
	return j.loadSecret(damaged)
}

// quickCheck runs PRAGMA quick_check: a read of the whole file.
func quickCheck(db interface {
	Query(string, ...any) (*sql.Rows, error)
}) error {
	rows, err := db.Query("PRAGMA quick_check")
	if err != nil {
		return err
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return err
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(problems) > 0 {
		if len(problems) > 3 {
			problems = append(problems[:3], "…")
		}
		return errors.New("quick_check: " + strings.Join(problems, "; "))
	}
	return nil
}

// CheckIntegrity reads the whole journal (quick_check) on a connection of
// its own, so the lane keeps working meanwhile. The daemon runs it after
// READY when Open skipped it; damage stops the daemon.
func (j *Journal) CheckIntegrity(ctx context.Context) error {
	db, err := sql.Open("sqlite", "file:"+j.path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	rows, err := conn.QueryContext(ctx, "PRAGMA quick_check")
	if err != nil {
		return j.damagedErr(err)
	}
	defer rows.Close()
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return j.damagedErr(err)
		}
		if line != "ok" {
			return j.damagedErr(errors.New("quick_check: " + line))
		}
	}
	if err := rows.Err(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return j.damagedErr(err)
	}
	return nil
}

// KeepUnclean makes Close leave the clean-stop mark unset, so the next
// Open reads the whole file: after a storage failure, or damage found.
func (j *Journal) KeepUnclean() { j.unclean.Store(true) }

func (j *Journal) damagedErr(err error) error {
	j.KeepUnclean()
	return fmt.Errorf("%w: journal %s is damaged (%v): keep the file for recovery and restore it from a backup or ask support", ErrStorage, j.path, err)
}

// isBusy reports whether err is SQLite's SQLITE_BUSY or SQLITE_LOCKED
// (primary code, extended codes included): another connection holds the
// lock. That is not damage, and must not be reported as such.
func isBusy(err error) bool {
	var se interface{ Code() int }
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff {
	case 5, 6: // SQLITE_BUSY, SQLITE_LOCKED
		return true
	}
	return false
}

func (j *Journal) migrate(from int) error {
	for v := from; v < SchemaVersion; v++ {
		if needsForeignKeysOff[v] {
			// A table rebuild drops tables others refer to; the keys are
			// checked once the new tables are in place, in the same
			// transaction.
			if _, err := j.db.Exec("PRAGMA foreign_keys = OFF"); err != nil {
				return err
			}
		}
		err := j.write(context.Background(), "migrate", func(t *wtx) error {
			if err := t.execScript(migrations[v-1]); err != nil {
				return err
			}
			if needsForeignKeysOff[v] {
				var table string
				var rowid, fkid sql.NullInt64
				var parent sql.NullString
				err := t.rowText("PRAGMA foreign_key_check").Scan(&table, &rowid, &parent, &fkid)
				if err == nil {
					return fmt.Errorf("foreign key check failed in %s", table)
				}
				if !errors.Is(err, sql.ErrNoRows) {
					return err
				}
			}
			_, err := t.execText(`UPDATE meta SET value = ? WHERE key = 'schema_version'`, fmt.Sprint(v+1))
			return err
		})
		if needsForeignKeysOff[v] {
			if _, ferr := j.db.Exec("PRAGMA foreign_keys = ON"); ferr != nil && err == nil {
				err = ferr
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Close closes the database; with TrackCleanStop it first marks the
// journal as closed cleanly.
func (j *Journal) Close() error {
	j.loadMu.Lock()
	j.closed = true
	stop, done := j.loadStop, j.loadDone
	j.loadMu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	var err error
	// After a failed fsync nothing more is written, the clean mark least
	// of all: the next start must read the whole file.
	if j.trackStop && !j.unclean.Load() && j.wal.err() == nil {
		_, err = j.db.Exec(`UPDATE meta SET value = '1' WHERE key = 'clean_stop'`)
		if err == nil && j.ownSync {
			// Durable even when an operator's command keeps the file
			// open (then closing here checkpoints nothing).
			err = j.wal.sync()
		}
		if err != nil {
			err = storage("mark clean", err)
		}
	}
	if j.st != nil {
		j.st.close()
	}
	if cerr := j.db.Close(); err == nil {
		err = cerr
	}
	j.wal.close()
	if j.lock != nil {
		j.lock.Close() // last: the next daemon may open it now
		j.lock = nil
	}
	return err
}

// Path is the journal's file.
func (j *Journal) Path() string { return j.path }

// Secret is the random key for hashing payment codes, kept beside the
// journal (SecretPath); nil when the journal was opened read-only.
func (j *Journal) Secret() []byte { return append([]byte(nil), j.secret...) }

// Commits counts transactions committed by this Journal value.
func (j *Journal) Commits() int64 { return j.commits.Load() }

// SyncedCommits counts those of them committed with their own fsync.
func (j *Journal) SyncedCommits() int64 { return j.synced.Load() }

// Interrupted reports whether a write failed because its context ended
// (the caller stopped), not because of the disk: the transaction rolled
// back and nothing of it is on disk.
func Interrupted(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, sql.ErrTxDone)
}

// storage marks err as a storage failure and keeps it as the cause, so
// the fatal error that stops the daemon says what the disk did.
func storage(op string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrStorage, op, err)
}

// write runs fn in one immediate transaction and commits it with fsync.
func (j *Journal) write(ctx context.Context, op string, fn func(t *wtx) error) error {
	return j.transact(ctx, op, true, fn)
}

// writeUnsynced is write without the commit's fsync, for facts the next
// synced commit makes durable in time: the WAL is appended in order, so
// the next commit's fsync covers this one's frames too. A crash of the
// process loses nothing; a power cut before the next synced commit loses
// this transaction. Until that commit, Unsynced is true and the outbox
// holds back the events this transaction wrote (UndurableFrom).
func (j *Journal) writeUnsynced(ctx context.Context, op string, fn func(t *wtx) error) error {
	return j.transact(ctx, op, false, fn)
}

// failed is the error of a write that did not commit: when the caller
// stopped meanwhile (ctx ended), an interrupted write, nothing of it on
// disk; otherwise a storage failure.
func failed(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%s: %w (%v)", op, cerr, err)
	}
	return storage(op, err)
}

// durability follows commits made without their own fsync until a synced
// commit covers them: the WAL is appended in order, so one fsync makes
// every earlier frame durable. Every commit of this process goes through
// the journal's one connection, held through its fsync and bookkeeping,
// so transactions do not overlap; the generation keeps the bookkeeping
// right should that ever change.
type durability struct {
	mu sync.Mutex
	// gen counts transactions begun without fsync; a synced commit covers
	// what came before it only if none began since it did.
	gen   uint64
	dirty bool // such a transaction may have committed, not yet covered
	// holdFrom is the first outbox event written since the last covering
	// fsync (0: none). It is set as the event is written, before the
	// commit makes it visible to the publisher's connection; a synced
	// commit is visible before its fsync too, so its events are held
	// until then like any other. It is kept if the transaction rolls back
	// (the next synced commit clears it).
	holdFrom uint64
}

// begin starts a transaction's bookkeeping and returns the generation a
// synced commit covers.
func (d *durability) begin(synced bool) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !synced {
		d.gen++
		d.dirty = true
	}
	return d.gen
}

// emitted notes an outbox event written by the running transaction.
func (d *durability) emitted(seq uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.holdFrom == 0 {
		d.holdFrom = seq
	}
}

// committed records a synced commit, after its fsync: it covers every
// transaction begun before it, unless one without fsync began since (gen
// moved on).
func (d *durability) committed(synced bool, gen uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if synced && gen == d.gen {
		d.dirty, d.holdFrom = false, 0
	}
}

// Unsynced reports whether a commit is waiting for an fsync (Sync).
func (j *Journal) Unsynced() bool {
	if j.wal.err() != nil {
		return true // a commit's fsync failed: it is not durable
	}
	j.dur.mu.Lock()
	defer j.dur.mu.Unlock()
	return j.dur.dirty
}

// UndurableFrom is the first outbox event that a power cut could still
// undo (0: none). The fleet publisher sends only the events before it: an
// event head office took must never be undone and its sequence number
// reused for another.
func (j *Journal) UndurableFrom() uint64 {
	j.dur.mu.Lock()
	defer j.dur.mu.Unlock()
	return j.dur.holdFrom
}

// Sync makes every commit so far durable: when one is waiting (Unsynced),
// a small synced commit fsyncs the WAL, and the unsynced frames with it.
func (j *Journal) Sync(ctx context.Context) error {
	if err := j.wal.err(); err != nil {
		return storage("sync", err) // nothing since is durable
	}
	j.dur.mu.Lock()
	idle := !j.dur.dirty && j.dur.holdFrom == 0
	j.dur.mu.Unlock()
	// (A synced write that emitted and then rolled back leaves a hold
	// with nothing unsynced: a sync clears it too.)
	if idle {
		return nil
	}
	return j.write(ctx, "sync", func(t *wtx) error {
		_, err := t.execText(`INSERT OR REPLACE INTO meta(key, value) VALUES ('synced_at', ?)`, fmt.Sprint(ms(j.now())))
		return err
	})
}

func isLogical(err error) bool {
	for _, e := range []error{ErrNotFound, ErrCodeUsed, ErrStateChanged, ErrInvalidTransition, ErrRefundTooLarge, ErrNotRefundable} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func ms(t time.Time) int64 { return t.UnixMilli() }
