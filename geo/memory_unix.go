//go:build unix

package geo

import (
	"errors"
	"io"
	"syscall"
)

// readDatabase reads the whole file at path, refusing one over maxDatabaseSize, into anonymous
// memory mapped for it alone, then makes that memory read-only. release unmaps it; nothing may
// use the bytes afterwards.
//
// The bytes live outside the Go heap because the heap's size sets when the garbage collector
// runs next (GOGC: when the heap has grown by as much as is live): a 60 MB City database in the
// heap would let 60 MB of request garbage pile up between collections, doubling the service's
// memory under load for nothing, since a []byte holds no pointers to scan. Being a private copy,
// not a mapping of the file, it cannot change when the file is rewritten in place.
func readDatabase(path string) (data []byte, release func(), err error) {
	f, size, err := openDatabase(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close() // read-only: closing cannot lose anything
	if size == 0 {
		return nil, func() {}, nil
	}
	mem, err := syscall.Mmap(-1, 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return nil, nil, err
	}
	release = func() { _ = syscall.Munmap(mem) } // fails only for a mapping that is not there
	n, err := io.ReadFull(f, mem)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		// Shorter than it was a moment ago: rewritten while we read. What was read is checked
		// like any other file, and a torn database is refused when opened.
	case err != nil:
		release()
		return nil, nil, err
	default:
		var one [1]byte
		if m, _ := f.Read(one[:]); m > 0 {
			release()
			return nil, nil, errors.New("the file grew while it was read (is it being written?)")
		}
	}
	if err := syscall.Mprotect(mem, syscall.PROT_READ); err != nil {
		release()
		return nil, nil, err
	}
	return mem[:n], release, nil
}
