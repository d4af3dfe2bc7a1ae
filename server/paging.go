package server

import (
	"encoding/base64"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Page tokens. Lists ordered newest first by (time, id) page by keyset
// (pageToken); lists whose order moves with activity page by offset
// (pageOffset).

// pageSize is the page size a request asked for, or def.
func pageSize(requested int32, def int) int {
	if requested == 0 {
		return def
	}
	return int(requested)
}

// pageToken is the position after a row of a list ordered newest first by
// (time, id): the row's time in microseconds (PostgreSQL's precision) and id.
func pageToken(t time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(t.UnixMicro(), 10) + "/" + id))
}

// parsePageToken reads a pageToken; an empty token is the first page.
func parsePageToken(token string) (*time.Time, *string, error) {
	if token == "" {
		return nil, nil, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return nil, nil, errBadPageToken
	}
	micros, id, ok := strings.Cut(string(raw), "/")
	if !ok || !isUUID(id) {
		return nil, nil, errBadPageToken
	}
	us, err := strconv.ParseInt(micros, 10, 64)
	if err != nil {
		return nil, nil, errBadPageToken
	}
	t := time.UnixMicro(us)
	if y := t.UTC().Year(); y < 1 || y > 9999 {
		// No row has such a time (the API's timestamps span years 1 to
		// 9999), and PostgreSQL refuses one before 4713 BC.
		return nil, nil, errBadPageToken
	}
	return &t, &id, nil
}

// pageOffset reads the offset a page token carries.
func pageOffset(token string) (int, error) {
	if token == "" {
		return 0, nil
	}
	// The queries take the offset as an int32.
	n, err := strconv.ParseInt(token, 10, 32)
	if err != nil || n < 0 {
		return 0, errBadPageToken
	}
	return int(n), nil
}

// searchPageToken is the position after username in SearchUsers' results
// for query. The token carries its query, so that a token from another
// search is refused instead of silently skipping results.
func searchPageToken(query, username string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("u:" + query + "\x00" + username))
}

// parseSearchPageToken reads a searchPageToken of query: the username to
// continue after, "" for the first page.
func parseSearchPageToken(token, query string) (string, error) {
	if token == "" {
		return "", nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return "", errBadPageToken
	}
	after, ok := strings.CutPrefix(string(raw), "u:"+query+"\x00")
	// The username goes to PostgreSQL as text, which holds neither NUL nor
	// invalid UTF-8.
	if !ok || !utf8.ValidString(after) || strings.ContainsRune(after, 0) {
		return "", errBadPageToken
	}
	return after, nil
}
