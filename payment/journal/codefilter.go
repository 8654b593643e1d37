package journal

import (
	"context"
	"sync/atomic"
	"time"
)

// codeFilter answers "certainly not used" for most payment codes without a
// read of the journal: a scanned code's check is the one journal read
// between the scan and create_order on the wire, and on a busy lane that
// read, not the hash, is what the customer waits for.
//
// It is a Bloom filter over the code hashes in the journal: a hash that
// was attached is always "maybe" (no false negatives), and a "maybe" is
// settled by the index as before, so the answer is exact either way. It
// is trusted only once it holds every hash: FilterCodes (the lane calls
// it once READY) loads the hashes already on disk in the background, and
// this Journal adds each hash it attaches before the write that stores
// it. Until the load has finished every check reads the index; a failed
// load is tried again later.
//
// Its size is fixed (128 KiB, whatever the journal's size): with 100 000
// codes about 1 % of checks still read the index, and a journal many times
// larger only makes more of them do so. Codes are only attached by the
// daemon's lane, and one daemon at a time runs it (Options.Exclusive);
// operator commands never attach one. So no other process adds hashes
// behind its back, and the index's UNIQUE constraint still refuses a used
// code at the attach, as it always has.
type codeFilter struct {
	bits     []atomic.Uint64
	complete atomic.Bool
}

const (
	codeFilterBits   = 1 << 20 // 128 KiB
	codeFilterHashes = 5
	codeLoadChunk    = 1024 // hashes per read while loading: writers wait for at most one chunk
	codeLoadRetry    = 10 * time.Second
	codeLoadRetryMax = 5 * time.Minute
)

func newCodeFilter() *codeFilter {
	return &codeFilter{bits: make([]atomic.Uint64, codeFilterBits/64)}
}

// positions derives the hash's bit positions by double hashing (Kirsch and
// Mitzenmacher): FNV-1a, then a splitmix64 finaliser for the step. The
// hashes are HMAC output already, but tests use short names.
func (f *codeFilter) positions(hash string) (h1, h2 uint64) {
	h1 = 14695981039346656037
	for i := 0; i < len(hash); i++ {
		h1 ^= uint64(hash[i])
		h1 *= 1099511628211
	}
	h2 = h1 + 0x9e3779b97f4a7c15
	h2 = (h2 ^ (h2 >> 30)) * 0xbf58476d1ce4e5b9
	h2 = (h2 ^ (h2 >> 27)) * 0x94d049bb133111eb
	h2 ^= h2 >> 31
	return h1, h2 | 1
}

func (f *codeFilter) add(hash string) {
	h1, h2 := f.positions(hash)
	for i := uint64(0); i < codeFilterHashes; i++ {
		p := (h1 + i*h2) % codeFilterBits
		f.bits[p/64].Or(1 << (p % 64))
	}
}

// mayContain is false only for a hash that was never added.
func (f *codeFilter) mayContain(hash string) bool {
	h1, h2 := f.positions(hash)
	for i := uint64(0); i < codeFilterHashes; i++ {
		p := (h1 + i*h2) % codeFilterBits
		if f.bits[p/64].Load()&(1<<(p%64)) == 0 {
			return false
		}
	}
	return true
}

// surelyUnused reports whether the filter can say, without the index,
// that hash is not in the journal.
func (f *codeFilter) surelyUnused(hash string) bool {
	return f.complete.Load() && !f.mayContain(hash)
}

// loadCodes adds every code hash on disk to the filter, a chunk per read
// in the index's order, marks it complete and returns how many it read.
// A hash attached while it runs is added by its writer, so none is missed
// whichever chunk it falls in. An error (or Close) leaves the filter
// incomplete: checks keep reading the index.
func (j *Journal) loadCodes(ctx context.Context, chunk int) (int, error) {
	after, total := "", 0
	for {
		n, last, err := j.loadCodeChunk(ctx, after, chunk)
		total += n
		if err != nil {
			return total, err
		}
		if n < chunk {
			j.codes.complete.Store(true)
			return total, nil
		}
		after = last
	}
}

func (j *Journal) loadCodeChunk(ctx context.Context, after string, chunk int) (n int, last string, err error) {
	rows, err := j.st.codesAfter.QueryContext(ctx, after, chunk)
	if err != nil {
		return 0, "", err
	}
	defer rows.Close()
	for rows.Next() {
		if err := rows.Scan(&last); err != nil {
			return 0, "", err
		}
		j.codes.add(last)
		n++
	}
	return n, last, rows.Err()
}
