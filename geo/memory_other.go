//go:build !unix

package geo

import (
	"bytes"
	"io"
)

// readDatabase reads the whole file at path, refusing one over maxDatabaseSize. The buffer is
// sized from Stat so that a large database is read in one allocation, not grown by doubling; the
// limit holds even if the file grows while it is read. The garbage collector frees it: release
// does nothing.
func readDatabase(path string) (data []byte, release func(), err error) {
	f, size, err := openDatabase(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close() // read-only: closing cannot lose anything
	buf := bytes.NewBuffer(make([]byte, 0, size+bytes.MinRead))
	if _, err := buf.ReadFrom(io.LimitReader(f, maxDatabaseSize+1)); err != nil {
		return nil, nil, err
	}
	if buf.Len() > maxDatabaseSize {
		return nil, nil, tooLarge(int64(buf.Len()))
	}
	return buf.Bytes(), func() {}, nil
}
