package journal

// SchemaVersion is the schema this code writes. Older journals are
// migrated forward at Open (see migrations); a newer one is refused.
const SchemaVersion = 5

// schema is a new journal's, built to write few pages per sale: orders
// and refunds are keyed by their sequence (the row id, so no counter row
// is rewritten per sale), the transition log is clustered by order
// (WITHOUT ROWID, no AUTOINCREMENT bookkeeping), and the indexes that
// only serve open orders, register references or attached codes are
// partial. (Journals made before the partial orders_code have
// code_hash UNIQUE on the column, which indexes the NULL of every armed
// order too: the same rule, two more pages written per sale.)
const schema = `
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE orders (
	seq          INTEGER PRIMARY KEY,
	mch_order_no TEXT NOT NULL UNIQUE,
	terminal_id  TEXT NOT NULL,
	amount       INTEGER NOT NULL CHECK (amount > 0),
	currency     TEXT NOT NULL,
	channel      TEXT NOT NULL DEFAULT '',
	code_masked  TEXT NOT NULL DEFAULT '',
	code_hash    TEXT,
	source       TEXT NOT NULL,
	ecr_ref      TEXT NOT NULL DEFAULT '',
	pos_number   TEXT NOT NULL DEFAULT '',
	ecr_type     TEXT NOT NULL DEFAULT '',
	state        TEXT NOT NULL,
	pay_order_id TEXT NOT NULL DEFAULT '',
	status       INTEGER NOT NULL DEFAULT -1,
	message      TEXT NOT NULL DEFAULT '',
	not_sent     INTEGER NOT NULL DEFAULT 0,
	refunded     INTEGER NOT NULL DEFAULT 0,
	created_at   INTEGER NOT NULL,
	updated_at   INTEGER NOT NULL
);
CREATE UNIQUE INDEX orders_code ON orders(code_hash) WHERE code_hash IS NOT NULL;
CREATE INDEX orders_open ON orders(state) WHERE state IN ('ARMED','SUBMITTING','POLLING','UNCONFIRMED','LATE_PAID');
CREATE INDEX orders_created ON orders(created_at);
CREATE INDEX orders_ref ON orders(ecr_ref, seq) WHERE ecr_ref <> '';
CREATE INDEX orders_pay ON orders(pay_order_id) WHERE pay_order_id <> '';
CREATE TABLE transitions (
	order_seq  INTEGER NOT NULL,
	n          INTEGER NOT NULL,
	at         INTEGER NOT NULL,
	from_state TEXT NOT NULL,
	to_state   TEXT NOT NULL,
	status     INTEGER NOT NULL DEFAULT -1,
	detail     TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (order_seq, n)
) WITHOUT ROWID;
CREATE TABLE refunds (
	seq           INTEGER PRIMARY KEY,
	mch_refund_no TEXT NOT NULL UNIQUE,
	mch_order_no  TEXT NOT NULL REFERENCES orders(mch_order_no),
	amount        INTEGER NOT NULL CHECK (amount > 0),
	state         TEXT NOT NULL,
	message       TEXT NOT NULL DEFAULT '',
	source        TEXT NOT NULL DEFAULT '',
	ecr_ref       TEXT NOT NULL DEFAULT '',
	created_at    INTEGER NOT NULL,
	updated_at    INTEGER NOT NULL
);
CREATE INDEX refunds_order ON refunds(mch_order_no);
CREATE INDEX refunds_ecr ON refunds(ecr_ref, amount) WHERE source = 'ecr';
CREATE INDEX refunds_open ON refunds(state) WHERE state IN ('SENT','UNKNOWN');
`

// takenSchema marks orders and refunds whose final answer the register
// took (so the same request again is a new one, not a retry), and orders
// interrupted by a restart (whose outcome may have been shown before it
// was on disk). New journals are schema, outboxSchema and takenSchema.
const takenSchema = `ALTER TABLE orders ADD COLUMN ecr_taken INTEGER NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE refunds ADD COLUMN ecr_taken INTEGER NOT NULL DEFAULT 0;`

// migrations upgrade a journal from version i+1 to i+2, each in one
// transaction with the version bump.
var migrations = []string{
	// 1 → 2: the order sequence (newest is decided by it, never by the
	// wall clock), the register's transaction type, and refunds keyed by
	// who asked for them.
	`ALTER TABLE orders ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
	 UPDATE orders SET seq = rowid;
	 ALTER TABLE orders ADD COLUMN ecr_type TEXT NOT NULL DEFAULT '';
	 DROP INDEX IF EXISTS orders_ref;
	 CREATE INDEX orders_ref_seq ON orders(ecr_ref, seq);
	 CREATE INDEX orders_seq ON orders(seq);
	 ALTER TABLE refunds ADD COLUMN source TEXT NOT NULL DEFAULT '';
	 ALTER TABLE refunds ADD COLUMN ecr_ref TEXT NOT NULL DEFAULT '';`,
	// 2 → 3: the lean layout above, and orders armed before their code
	// (code_hash NULL until the code is attached). The tables are rebuilt
	// (SQLite cannot change a primary key in place); every row is kept.
	`CREATE TABLE orders_v3 (
		seq INTEGER PRIMARY KEY, mch_order_no TEXT NOT NULL UNIQUE, terminal_id TEXT NOT NULL,
		amount INTEGER NOT NULL CHECK (amount > 0), currency TEXT NOT NULL, channel TEXT NOT NULL DEFAULT '',
		code_masked TEXT NOT NULL DEFAULT '', code_hash TEXT UNIQUE, source TEXT NOT NULL,
		ecr_ref TEXT NOT NULL DEFAULT '', pos_number TEXT NOT NULL DEFAULT '', ecr_type TEXT NOT NULL DEFAULT '',
		state TEXT NOT NULL, pay_order_id TEXT NOT NULL DEFAULT '', status INTEGER NOT NULL DEFAULT -1,
		message TEXT NOT NULL DEFAULT '', not_sent INTEGER NOT NULL DEFAULT 0, refunded INTEGER NOT NULL DEFAULT 0,
		created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
	 INSERT INTO orders_v3 (seq, mch_order_no, terminal_id, amount, currency, channel, code_masked, code_hash, source,
		ecr_ref, pos_number, ecr_type, state, pay_order_id, status, message, not_sent, refunded, created_at, updated_at)
		SELECT seq, mch_order_no, terminal_id, amount, currency, channel, code_masked, code_hash, source,
		ecr_ref, pos_number, ecr_type, state, pay_order_id, status, message, not_sent, refunded, created_at, updated_at
		FROM orders ORDER BY seq;
	 CREATE TABLE transitions_v3 (order_seq INTEGER NOT NULL, n INTEGER NOT NULL, at INTEGER NOT NULL,
		from_state TEXT NOT NULL, to_state TEXT NOT NULL, status INTEGER NOT NULL DEFAULT -1, detail TEXT NOT NULL DEFAULT '',
		PRIMARY KEY (order_seq, n)) WITHOUT ROWID;
	 INSERT INTO transitions_v3 (order_seq, n, at, from_state, to_state, status, detail)
		SELECT o.seq, (SELECT COUNT(*) FROM transitions t2 WHERE t2.mch_order_no = t.mch_order_no AND t2.id <= t.id),
		t.at, t.from_state, t.to_state, t.status, t.detail
		FROM transitions t JOIN orders o ON o.mch_order_no = t.mch_order_no;
	 CREATE TABLE refunds_v3 (seq INTEGER PRIMARY KEY, mch_refund_no TEXT NOT NULL UNIQUE,
		mch_order_no TEXT NOT NULL REFERENCES orders(mch_order_no), amount INTEGER NOT NULL CHECK (amount > 0),
		state TEXT NOT NULL, message TEXT NOT NULL DEFAULT '', source TEXT NOT NULL DEFAULT '', ecr_ref TEXT NOT NULL DEFAULT '',
		created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
	 INSERT INTO refunds_v3 (seq, mch_refund_no, mch_order_no, amount, state, message, source, ecr_ref, created_at, updated_at)
		SELECT rowid, mch_refund_no, mch_order_no, amount, state, message, source, ecr_ref, created_at, updated_at FROM refunds ORDER BY rowid;
	 DROP TABLE refunds;
	 DROP TABLE transitions;
	 DROP TABLE orders;
	 ALTER TABLE orders_v3 RENAME TO orders;
	 ALTER TABLE transitions_v3 RENAME TO transitions;
	 ALTER TABLE refunds_v3 RENAME TO refunds;
	 CREATE INDEX orders_open ON orders(state) WHERE state IN ('ARMED','SUBMITTING','POLLING','UNCONFIRMED','LATE_PAID');
	 CREATE INDEX orders_created ON orders(created_at);
	 CREATE INDEX orders_ref ON orders(ecr_ref, seq) WHERE ecr_ref <> '';
	 CREATE INDEX orders_pay ON orders(pay_order_id) WHERE pay_order_id <> '';
	 CREATE INDEX refunds_order ON refunds(mch_order_no);
	 CREATE INDEX refunds_ecr ON refunds(ecr_ref, amount) WHERE source = 'ecr';
	 CREATE INDEX refunds_open ON refunds(state) WHERE state IN ('SENT','UNKNOWN');
	 DELETE FROM meta WHERE key IN ('order_counter', 'refund_counter');`,
	// 3 → 4: the fleet outbox (outbox.go).
	outboxSchema,
	// 4 → 5: what the register took (MarkTaken, MarkRefundTaken), and
	// orders interrupted by a restart.
	takenSchema,
}

// needsForeignKeysOff lists migrations that rebuild tables: foreign keys
// are checked after them (PRAGMA foreign_key_check) instead of during.
var needsForeignKeysOff = map[int]bool{2: true}
