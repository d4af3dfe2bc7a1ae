package server

import (
	"strings"
	"unicode/utf8"

	"github.com/trustelem/zxcvbn/frequency"
)

// passwordPolicy refuses passwords that are guessed first, as NIST SP 800-63B
// (§3.1.1.2) asks of a verifier: ones on a list of common and breached
// passwords, ones made of the account's own name, and trivial ones. Length is
// checked by the request's validation rules; composition rules (a digit, a
// symbol) are deliberately not imposed, as NIST advises.
type passwordPolicy struct {
	common map[string]struct{}
}

// newPasswordPolicy builds the policy around zxcvbn's list of the 30,000 most
// common passwords (from a corpus of 10 million leaked passwords), lower case,
// shipped in the Go module github.com/trustelem/zxcvbn (MIT).
func newPasswordPolicy() *passwordPolicy {
	list := frequency.FrequencyLists["passwords"]
	p := &passwordPolicy{common: make(map[string]struct{}, len(list))}
	for _, w := range list {
		p.common[w] = struct{}{}
	}
	return p
}

// check returns an InvalidArgument error naming field when password may not
// be set for username, and says which rule it breaks.
func (p *passwordPolicy) check(field, username, password string) error {
	lower := strings.ToLower(password)
	switch {
	case strings.TrimSpace(password) == "":
		return invalidArgument(field, "parley.password.blank", "must not be only whitespace")
	case oneRepeatedRune(password):
		return invalidArgument(field, "parley.password.repeated", "must not be one character repeated")
	case username != "" && strings.Contains(lower, strings.ToLower(username)):
		return invalidArgument(field, "parley.password.username", "must not contain the username")
	}
	if _, ok := p.common[lower]; ok {
		return invalidArgument(field, "parley.password.common", "is one of the most common passwords, which attackers try first; choose another")
	}
	return nil
}

// oneRepeatedRune reports whether s is a single character, repeated.
func oneRepeatedRune(s string) bool {
	first, size := utf8.DecodeRuneInString(s)
	for _, r := range s[size:] {
		if r != first {
			return false
		}
	}
	return true
}
