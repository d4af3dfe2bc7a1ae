package server

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// deviceTokenTTL is how long a device stays known without signing in again;
// each successful login renews it.
const deviceTokenTTL = 180 * 24 * time.Hour

// deviceTokens issues and checks device tokens: proof that a client signed in
// to an account before, which exempts its logins from the account-wide
// failure budget (see loginThrottle). A token is
// "<user id>.<device id>.<issued unix seconds>.<HMAC-SHA256>", signed with a
// key derived from the access token key that every node shares, so any node
// checks it without storing anything. It is no credential: Login still needs
// the password.
type deviceTokens struct {
	key []byte
}

func newDeviceTokens(accessKey []byte) *deviceTokens {
	// A key of its own, so that no device token can pass for an access
	// token's signature or the reverse.
	m := hmac.New(sha256.New, accessKey)
	m.Write([]byte("parley device token key"))
	return &deviceTokens{key: m.Sum(nil)}
}

// newDeviceID names a device that has no token yet.
func newDeviceID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b)
}

// issue returns a device token for the user's device.
func (d *deviceTokens) issue(userID, deviceID string, now time.Time) string {
	payload := userID + "." + deviceID + "." + strconv.FormatInt(now.Unix(), 10)
	return payload + "." + d.sign(payload)
}

// verify returns the device id a token names, when the token is genuine,
// unexpired and the user's. An unknown or foreign token is no error: the
// client is simply not a known device.
func (d *deviceTokens) verify(token, userID string, now time.Time) (string, bool) {
	if token == "" || userID == "" {
		return "", false
	}
	i := strings.LastIndexByte(token, '.')
	if i < 0 {
		return "", false
	}
	payload, sig := token[:i], token[i+1:]
	if !hmac.Equal([]byte(sig), []byte(d.sign(payload))) {
		return "", false
	}
	parts := strings.Split(payload, ".")
	if len(parts) != 3 || parts[0] != userID || parts[1] == "" {
		return "", false
	}
	issued, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil || now.After(time.Unix(issued, 0).Add(deviceTokenTTL)) {
		return "", false
	}
	return parts[1], true
}

func (d *deviceTokens) sign(payload string) string {
	m := hmac.New(sha256.New, d.key)
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
