package journal

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// walSync makes the daemon's synced commits durable: its connection runs
// with synchronous=NORMAL (a commit appends its frames to the WAL without
// fsync), and a synced commit is followed by an fdatasync of the WAL file
// through a descriptor of the journal's own. (Other processes, operator
// commands, commit with FULL: see Journal.ownSync.) That is what FULL does inside
// the commit, one syscall later; it spares the two PRAGMAs per unsynced
// commit that switching the connection between FULL and NORMAL cost.
//
// fsync acts on the file, whichever descriptor wrote it. The descriptor is
// checked against the path at every sync: SQLite deletes the WAL when its
// last connection closes (the pool may replace a broken one) and makes a
// new file later, and an fdatasync of the old one would make nothing
// durable.
type walSync struct {
	mu   sync.Mutex
	path string // the journal's WAL, PATH-wal
	f    *os.File
	id   fileID // f's file
	// syncs counts fdatasyncs made; tests read it.
	syncs int
	// failed is the first fdatasync failure, returned by every later
	// sync: Linux reports a writeback error once per file, so a later
	// fdatasync could succeed over frames the kernel dropped, and a
	// commit after them would be called durable (and its outbox events,
	// and the failed commit's, released to head office).
	failed error
	// closed: the journal closed; a sync after that (a write the close
	// overtook) fails instead of opening the WAL again.
	closed bool
	// fdatasync is unix.Fdatasync; tests make it fail.
	fdatasync func(fd int) error
}

// fileID names a file on its filesystem.
type fileID struct {
	devMajor, devMinor uint32
	ino                uint64
}

// identify asks only for the inode number (the device comes with it):
// a stat that asks for the file's times marks them as seen, and the
// kernel (multigrain timestamps, Linux 6.13+) then gives the next write
// a fresh mtime, which costs each fdatasync a journal commit of the
// inode: a third more block requests per sale on ext4.
func identify(dirfd int, path string, flags int) (fileID, error) {
	var st unix.Statx_t
	if err := unix.Statx(dirfd, path, flags, unix.STATX_INO, &st); err != nil {
		return fileID{}, err
	}
	return fileID{st.Dev_major, st.Dev_minor, st.Ino}, nil
}

// sync fdatasyncs the WAL as it is on disk now. A missing WAL is an
// error: it exists while the journal's connection is open in WAL mode, so
// a commit that finds none was not written where it should have been.
func (w *walSync) sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed != nil {
		return w.failed
	}
	if w.closed {
		return errors.New("sync WAL: the journal is closed")
	}
	now, err := identify(unix.AT_FDCWD, w.path, 0)
	if err != nil {
		return fmt.Errorf("sync WAL %s: %w", w.path, err)
	}
	if w.f != nil && now != w.id {
		w.f.Close()
		w.f = nil
	}
	if w.f == nil {
		f, err := os.OpenFile(w.path, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("sync WAL: %w", err)
		}
		id, err := identify(int(f.Fd()), "", unix.AT_EMPTY_PATH)
		if err != nil {
			f.Close()
			return fmt.Errorf("sync WAL %s: %w", w.path, err)
		}
		w.f, w.id = f, id
	}
	// Retried on EINTR only: after any other failure the kernel may have
	// dropped the dirty pages, and a second fdatasync would report success
	// for data that never reached the disk.
	fdatasync := w.fdatasync
	if fdatasync == nil {
		fdatasync = unix.Fdatasync
	}
	for {
		err = fdatasync(int(w.f.Fd()))
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		w.failed = fmt.Errorf("sync WAL %s: %w", w.path, err)
		return w.failed
	}
	w.syncs++
	return nil
}

// findWAL sets the WAL's path from SQLite's own name for the database:
// SQLite resolves a symbolic link to the journal and keeps the WAL beside
// the file it points to.
func (j *Journal) findWAL() error {
	rows, err := j.db.Query(`PRAGMA database_list`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var seq int
		var name, file string
		if err := rows.Scan(&seq, &name, &file); err != nil {
			return err
		}
		if name == "main" && file != "" {
			j.wal.path = file + "-wal"
			return rows.Err()
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return errors.New("SQLite names no file for the journal")
}

// err is the fdatasync failure that ended the journal's writes, if any.
func (w *walSync) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failed
}

func (w *walSync) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
}
