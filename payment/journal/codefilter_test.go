package journal

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testHash(i int) string {
	h := sha256.Sum256([]byte(fmt.Sprint("code", i)))
	return hex.EncodeToString(h[:])
}

// The filter never forgets a hash, and says "maybe" for few others.
func TestCodeFilterNoFalseNegatives(t *testing.T) {
	f := newCodeFilter()
	const n = 100000
	for i := 0; i < n; i++ {
		f.add(testHash(i))
	}
	for i := 0; i < n; i++ {
		if !f.mayContain(testHash(i)) {
			t.Fatalf("hash %d was added but is not in the filter", i)
		}
	}
	fp := 0
	for i := n; i < 2*n; i++ {
		if f.mayContain(testHash(i)) {
			fp++
		}
	}
	// 1 Mbit, 5 hashes, 100 000 entries: about 0.8 % expected.
	if rate := float64(fp) / n; rate > 0.02 {
		t.Fatalf("false positive rate %.3f with %d entries", rate, n)
	}
	if f.surelyUnused(testHash(2 * n)) {
		t.Fatal("an incomplete filter answered without the index")
	}
}

// waitLoaded starts the code filter's load and waits for it.
func waitLoaded(t *testing.T, j *Journal) {
	t.Helper()
	j.FilterCodes()
	<-j.loadDone
	if !j.codes.complete.Load() {
		t.Fatal("the code filter's load did not complete")
	}
}

// journalWithCodes makes a closed journal holding codes 0..n-1.
func journalWithCodes(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal.db")
	j, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	fillCodes(t, j, 0, n)
	j.Close()
	return path
}

// fillCodes arms n orders and attaches code i to the i-th.
func fillCodes(t *testing.T, j *Journal, from, n int) {
	t.Helper()
	ctx := context.Background()
	for i := from; i < from+n; i++ {
		o, err := j.ArmOrder(ctx, Armed{TerminalID: "L01", Amount: 100, Currency: "CAD", Source: "keypad"}, func(c uint64) string { return fmt.Sprintf("L01-%08d", c) })
		if err != nil {
			t.Fatal(err)
		}
		if _, err := j.AttachCode(ctx, o.MchOrderNo, Code{Channel: "WX_MICROPAY", CodeMasked: "13**", CodeHash: testHash(i)}); err != nil {
			t.Fatal(err)
		}
	}
}

// After a restart the codes on disk are loaded, in chunks, and every one
// of them is still reported used; unused codes are answered by the filter.
func TestCodeFilterLoadsTheJournal(t *testing.T) {
	ctx := context.Background()
	path := journalWithCodes(t, 50)
	j, err := Open(path, Options{codeChunk: 7}) // 50 = 7 chunks and a short one
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	waitLoaded(t, j)
	for i := 0; i < 50; i++ {
		if used, err := j.CodeUsed(ctx, testHash(i)); err != nil || !used {
			t.Fatalf("code %d is in the journal but CodeUsed = %v, %v", i, used, err)
		}
	}
	unanswered := 0
	for i := 50; i < 1050; i++ {
		if used, err := j.CodeUsed(ctx, testHash(i)); err != nil || used {
			t.Fatalf("code %d was never used but CodeUsed = %v, %v", i, used, err)
		}
		if !j.codes.surelyUnused(testHash(i)) {
			unanswered++
		}
	}
	if unanswered > 5 {
		t.Fatalf("%d of 1000 unused codes needed the index with 50 codes in the filter", unanswered)
	}
}

// Codes attached while the load runs, before and after its position in
// the index, are all reported used once it completes.
func TestCodeFilterAttachDuringLoad(t *testing.T) {
	ctx := context.Background()
	path := journalWithCodes(t, 300)
	for round := 0; round < 5; round++ {
		j, err := Open(path, Options{codeChunk: 1})
		if err != nil {
			t.Fatal(err)
		}
		base := 1000 * (round + 1)
		j.FilterCodes()
		fillCodes(t, j, base, 40) // while the load runs
		waitLoaded(t, j)
		for i := base; i < base+40; i++ {
			if used, err := j.CodeUsed(ctx, testHash(i)); err != nil || !used {
				t.Fatalf("round %d: code %d attached during the load but CodeUsed = %v, %v", round, i, used, err)
			}
		}
		j.Close()
	}
}

// A failed attach leaves its hash in the filter: a later check of that
// code reads the index, which says unused.
func TestCodeFilterFailedAttach(t *testing.T) {
	ctx := context.Background()
	j, _ := openTemp(t, Options{})
	waitLoaded(t, j)
	if _, err := j.AttachCode(ctx, "L01-00000099", Code{Channel: "WX_MICROPAY", CodeMasked: "13**", CodeHash: testHash(7)}); err == nil {
		t.Fatal("attached a code to an order that does not exist")
	}
	if j.codes.surelyUnused(testHash(7)) {
		t.Fatal("the filter forgot a hash whose write was attempted")
	}
	if used, err := j.CodeUsed(ctx, testHash(7)); err != nil || used {
		t.Fatalf("CodeUsed after a failed attach = %v, %v", used, err)
	}
}

// The load reads the code index, not the table, on both index layouts:
// a new journal's partial index, and an upgraded one's column UNIQUE.
func TestCodeLoadUsesTheIndex(t *testing.T) {
	j, _ := openTemp(t, Options{})
	if got := codeLoadPlan(t, j); !strings.Contains(got, "COVERING INDEX orders_code") || strings.Contains(got, "TEMP B-TREE") {
		t.Fatalf("code load plan: %s", got)
	}
	old, err := Open(tempV1Journal(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if got := codeLoadPlan(t, old); !strings.Contains(got, "COVERING INDEX sqlite_autoindex_orders") || strings.Contains(got, "TEMP B-TREE") {
		t.Fatalf("code load plan on an upgraded journal: %s", got)
	}
	waitLoaded(t, old)
	if used, err := old.CodeUsed(context.Background(), "h2"); err != nil || !used {
		t.Fatalf("a code from before the upgrade: CodeUsed = %v, %v", used, err)
	}
}

func codeLoadPlan(t *testing.T, j *Journal) string {
	t.Helper()
	rows, err := j.db.Query(`EXPLAIN QUERY PLAN SELECT code_hash FROM orders WHERE code_hash > ? ORDER BY code_hash LIMIT ?`, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	return strings.Join(plan, "; ")
}

// A read-only journal (reports) has no filter and still answers.
func TestCodeUsedReadOnly(t *testing.T) {
	ctx := context.Background()
	j, path := openTemp(t, Options{})
	fillCodes(t, j, 0, 3)
	j.Close()
	ro, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if used, err := ro.CodeUsed(ctx, testHash(1)); err != nil || !used {
		t.Fatalf("read-only CodeUsed = %v, %v", used, err)
	}
}

// BenchmarkCodeFilterLoad measures FilterCodes' background load of a
// journal of 100 000 coded orders (warm page cache).
func BenchmarkCodeFilterLoad(b *testing.B) {
	path := filepath.Join(b.TempDir(), "journal.db")
	j, err := Open(path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	tx, err := j.db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 100000; i++ {
		if _, err := tx.Exec(`INSERT INTO orders(seq, mch_order_no, terminal_id, amount, currency, channel, code_masked, code_hash, source, state, created_at, updated_at)
			VALUES (?, ?, 'L01', 100, 'CAD', 'WX_MICROPAY', '13**', ?, 'ecr', 'PAID', 0, 0)`, i+1, fmt.Sprintf("L01-%08d", i+1), testHash(i)); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	j.Close()
	b.ResetTimer()
	for b.Loop() {
		j, err := Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		j.FilterCodes()
		<-j.loadDone
		if !j.CodesFiltered() {
			b.Fatal("not loaded")
		}
		j.Close()
	}
}

// A load that fails is reported and tried again; checks read the index
// meanwhile, and the filter is trusted once a load completes.
func TestCodeFilterLoadRetried(t *testing.T) {
	ctx := context.Background()
	path := journalWithCodes(t, 5)
	type report struct {
		n   int
		err error
	}
	reports := make(chan report, 10)
	var jr *Journal
	jr, err := Open(path, Options{codeRetry: 10 * time.Millisecond, OnCodeFilter: func(n int, _ time.Duration, err error) {
		if err != nil {
			// Failed while the table was away: bring it back for the retry.
			if _, rerr := jr.db.Exec(`ALTER TABLE orders_away RENAME TO orders`); rerr != nil {
				t.Error(rerr)
			}
		}
		reports <- report{n, err}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer jr.Close()
	if _, err := jr.db.Exec(`ALTER TABLE orders RENAME TO orders_away`); err != nil {
		t.Fatal(err)
	}
	jr.FilterCodes()
	if r := <-reports; r.err == nil {
		t.Fatalf("the load did not fail without its table: %+v", r)
	}
	if jr.CodesFiltered() {
		t.Fatal("a failed load left the filter trusted")
	}
	if r := <-reports; r.err != nil || r.n != 5 {
		t.Fatalf("the retry: %+v, want 5 codes", r)
	}
	<-jr.loadDone
	if !jr.CodesFiltered() {
		t.Fatal("the filter is not trusted after a load completed")
	}
	if used, err := jr.CodeUsed(ctx, testHash(3)); err != nil || !used {
		t.Fatalf("CodeUsed after the retried load = %v, %v", used, err)
	}
}
