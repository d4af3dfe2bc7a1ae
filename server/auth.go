package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/redis/rueidis"

	"github.com/parley-chat/parley/db"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// authService implements parley.v1.AuthService.
type authService struct {
	db     *db.DB
	hasher *passwordHasher
	policy *passwordPolicy
	tokens *tokens
	hub    *hub
	cfg    Config

	logins         *loginThrottle
	registerByAddr *keyedLimiter
}

func newAuthService(d *db.DB, hasher *passwordHasher, t *tokens, h *hub, cfg Config, logger *slog.Logger) *authService {
	var redis rueidis.Client
	if h.relay != nil {
		redis = h.relay.client
	}
	return &authService{
		db:             d,
		hasher:         hasher,
		policy:         newPasswordPolicy(),
		tokens:         t,
		hub:            h,
		cfg:            cfg,
		logins:         newLoginThrottle(cfg, redis, logger),
		registerByAddr: newKeyedLimiter(cfg.RegisterPerAddress, 100_000),
	}
}

func (s *authService) Register(ctx context.Context, req *parleyv1.RegisterRequest) (*parleyv1.RegisterResponse, error) {
	if ok, wait := s.registerByAddr.allow(clientAddress(ctx), time.Now()); !ok {
		return nil, resourceExhausted("too many registrations from this address; try again later", wait)
	}
	displayName := strings.TrimSpace(req.GetDisplayName())
	if displayName == "" {
		return nil, invalidArgument("display_name", "parley.not_blank", "must not be blank")
	}
	if err := s.policy.check("password", req.GetUsername(), req.GetPassword()); err != nil {
		return nil, err
	}
	hash, err := s.hasher.hash(ctx, req.GetPassword())
	if err != nil {
		return nil, err
	}
	u, err := createUser(ctx, s.db, db.CreateUserParams{
		Username:     strings.ToLower(req.GetUsername()),
		DisplayName:  displayName,
		PasswordHash: hash,
	})
	if err != nil {
		return nil, err
	}
	return &parleyv1.RegisterResponse{User: userToProto(u)}, nil
}

func (s *authService) Login(ctx context.Context, req *parleyv1.LoginRequest) (*parleyv1.LoginResponse, error) {
	username := strings.ToLower(req.GetUsername())
	addr := clientAddress(ctx)
	now := time.Now()
	u, err := s.db.GetUserByUsername(ctx, username)
	if err != nil && !db.IsNoRows(err) {
		return nil, fmt.Errorf("look up user: %w", err)
	}
	// An unknown user has no id: no device token is its, and it has no
	// sessions, so it is throttled exactly as an account the client has
	// never used.
	device, known := s.tokens.devices.verify(req.GetDeviceToken(), u.ID, now)
	// Throttle before the expensive hash, so guessing costs the attacker time
	// and costs us nothing.
	attempt, err := s.logins.admit(ctx, loginAttempt{
		account: username,
		address: addr,
		device:  device,
		knownAddress: func(ctx context.Context) (bool, error) {
			return hasSessionFrom(ctx, s.db, u.ID, addr)
		},
	}, now)
	if err != nil {
		return nil, err
	}
	match, stale, err := s.hasher.check(ctx, req.GetPassword(), u.PasswordHash)
	if err != nil {
		attempt.refund(ctx, time.Now()) // no password was checked
		return nil, err
	}
	if !match {
		return nil, errBadCredentials
	}
	attempt.refund(ctx, time.Now())
	if !known {
		device = newDeviceID()
	}
	newHash := ""
	if stale {
		if newHash, err = s.hasher.hash(ctx, req.GetPassword()); err != nil {
			return nil, err
		}
	}

	refresh := randomToken()
	var session db.Session
	err = s.db.Tx(ctx, func(q *db.Queries) error {
		if newHash != "" {
			if err := q.SetPasswordHash(ctx, db.SetPasswordHashParams{ID: u.ID, PasswordHash: newHash}); err != nil {
				return fmt.Errorf("rehash password: %w", err)
			}
		}
		var err error
		session, err = q.CreateSession(ctx, db.CreateSessionParams{
			UserID:           u.ID,
			DeviceName:       strings.TrimSpace(req.GetDeviceName()),
			Platform:         int16(req.GetPlatform()),
			ClientAddress:    addr,
			RefreshTokenHash: hashToken(refresh),
			RefreshExpiresAt: now.Add(s.cfg.RefreshTokenTTL),
		})
		if err != nil {
			return fmt.Errorf("create session: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	toks, err := s.issue(session, refresh, now)
	if err != nil {
		return nil, err
	}
	return &parleyv1.LoginResponse{User: userToProto(u), Tokens: toks, DeviceToken: s.tokens.devices.issue(u.ID, device, now)}, nil
}

// hasSessionFrom reports whether the user has an active session opened from
// addr: the address is one the owner uses, not one an attacker picked.
func hasSessionFrom(ctx context.Context, d *db.DB, userID, addr string) (bool, error) {
	if userID == "" || addr == "" {
		return false, nil
	}
	sessions, err := d.ListActiveSessions(ctx, userID)
	if err != nil {
		return false, fmt.Errorf("list sessions: %w", err)
	}
	for _, s := range sessions {
		if s.ClientAddress == addr {
			return true, nil
		}
	}
	return false, nil
}

// refreshOutcome is what a refresh transaction decided; reuse of a spent token
// must commit the revocation, so it is reported as a value, not an error that
// would roll the transaction back.
type refreshOutcome int

const (
	refreshRotated refreshOutcome = iota
	refreshUnknown
	refreshExpired
	refreshRevoked
	refreshReused
)

func (s *authService) Refresh(ctx context.Context, req *parleyv1.RefreshRequest) (*parleyv1.RefreshResponse, error) {
	now := time.Now()
	presented := hashToken(req.GetRefreshToken())
	next := randomToken()
	var (
		outcome refreshOutcome
		session db.Session
	)
	err := s.db.Tx(ctx, func(q *db.Queries) error {
		outcome = refreshRotated
		cur, err := q.GetSessionByRefreshHashForUpdate(ctx, presented)
		if db.IsNoRows(err) {
			spent, err := q.GetSpentRefreshToken(ctx, presented)
			if db.IsNoRows(err) {
				outcome = refreshUnknown
				return nil
			}
			if err != nil {
				return fmt.Errorf("look up spent refresh token: %w", err)
			}
			// A spent token came back: either the client or a thief holds a
			// copy. We cannot tell which, so the session ends for both.
			outcome = refreshReused
			session.ID = spent.SessionID
			revoked, err := q.RevokeSessionByID(ctx, db.RevokeSessionByIDParams{ID: spent.SessionID, RevokeReason: ptr("refresh token reuse")})
			if err != nil && !db.IsNoRows(err) {
				return fmt.Errorf("revoke session after reuse: %w", err)
			}
			session.UserID = revoked.UserID // empty when it was revoked already
			return nil
		}
		if err != nil {
			return fmt.Errorf("look up session by refresh token: %w", err)
		}
		switch {
		case cur.RevokedAt != nil:
			outcome = refreshRevoked
			return nil
		case !now.Before(cur.RefreshExpiresAt):
			outcome = refreshExpired
			return nil
		}
		if err := q.SpendRefreshToken(ctx, db.SpendRefreshTokenParams{TokenHash: presented, SessionID: cur.ID}); err != nil {
			return fmt.Errorf("spend refresh token: %w", err)
		}
		session, err = q.RotateRefreshToken(ctx, db.RotateRefreshTokenParams{
			ID:               cur.ID,
			RefreshTokenHash: hashToken(next),
			RefreshExpiresAt: now.Add(s.cfg.RefreshTokenTTL),
		})
		if err != nil {
			return fmt.Errorf("rotate refresh token: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	switch outcome {
	case refreshUnknown:
		return nil, errRefreshUnknown
	case refreshExpired:
		return nil, errRefreshExpired
	case refreshRevoked:
		return nil, errSessionRevoked
	case refreshReused:
		s.tokens.sessions.forget(session.ID)
		s.hub.endSessions(session.UserID, session.ID)
		return nil, errRefreshReused
	}
	toks, err := s.issue(session, next, now)
	if err != nil {
		return nil, err
	}
	return &parleyv1.RefreshResponse{Tokens: toks}, nil
}

func (s *authService) Logout(ctx context.Context, _ *parleyv1.LogoutRequest) (*parleyv1.LogoutResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.revoke(ctx, c.UserID, c.SessionID, "logout"); err != nil && !errors.Is(err, errSessionNotFound) {
		return nil, err
	}
	return &parleyv1.LogoutResponse{}, nil
}

func (s *authService) ListSessions(ctx context.Context, _ *parleyv1.ListSessionsRequest) (*parleyv1.ListSessionsResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.ListActiveSessions(ctx, c.UserID)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	out := make([]*parleyv1.Session, 0, len(rows))
	for _, r := range rows {
		out = append(out, sessionToProto(r, c.SessionID))
	}
	return &parleyv1.ListSessionsResponse{Sessions: out}, nil
}

func (s *authService) RevokeSession(ctx context.Context, req *parleyv1.RevokeSessionRequest) (*parleyv1.RevokeSessionResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.revoke(ctx, c.UserID, req.GetSessionId(), "revoked by user"); err != nil {
		return nil, err
	}
	return &parleyv1.RevokeSessionResponse{}, nil
}

// revoke ends one of the user's sessions. Another user's session is
// indistinguishable from a missing one.
func (s *authService) revoke(ctx context.Context, userID, sessionID, reason string) error {
	revoked, err := s.db.RevokeSession(ctx, db.RevokeSessionParams{ID: sessionID, UserID: userID, RevokeReason: &reason})
	if db.IsNoRows(err) {
		return errSessionNotFound
	}
	if err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	// The cache is keyed by the id as tokens carry it (PostgreSQL's canonical
	// lower-case form); the client may have sent it in another case.
	s.tokens.sessions.forget(revoked.ID)
	s.hub.endSessions(userID, revoked.ID)
	return nil
}

func (s *authService) GetMe(ctx context.Context, _ *parleyv1.GetMeRequest) (*parleyv1.GetMeResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	u, err := s.db.GetUser(ctx, c.UserID)
	if db.IsNoRows(err) {
		return nil, errUserNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get user: %w", err)
	}
	return &parleyv1.GetMeResponse{User: userToProto(u), Privacy: privacyToProto(u)}, nil
}

func (s *authService) UpdateProfile(ctx context.Context, req *parleyv1.UpdateProfileRequest) (*parleyv1.UpdateProfileResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	params := db.UpdateProfileParams{ID: c.UserID}
	if req.DisplayName != nil {
		name := strings.TrimSpace(req.GetDisplayName())
		if name == "" {
			return nil, invalidArgument("display_name", "parley.not_blank", "must not be blank")
		}
		params.DisplayName = &name
	}
	if req.Bio != nil {
		bio := strings.TrimSpace(req.GetBio())
		params.Bio = &bio
	}
	var u db.User
	err = s.db.Tx(ctx, func(q *db.Queries) error {
		var err error
		u, err = q.UpdateProfile(ctx, params)
		if db.IsNoRows(err) {
			return errUserNotFound
		}
		if err != nil {
			return fmt.Errorf("update profile: %w", err)
		}
		if req.AvatarMediaId == nil {
			return nil
		}
		var avatar *string
		if id := req.GetAvatarMediaId(); id != "" {
			if err := checkAvatar(ctx, q, c.UserID, id); err != nil {
				return err
			}
			avatar = &id
		}
		if u, err = q.SetAvatar(ctx, db.SetAvatarParams{ID: c.UserID, AvatarMediaID: avatar}); err != nil {
			return fmt.Errorf("set avatar: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &parleyv1.UpdateProfileResponse{User: userToProto(u)}, nil
}

func (s *authService) ChangePassword(ctx context.Context, req *parleyv1.ChangePasswordRequest) (*parleyv1.ChangePasswordResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetCurrentPassword() == req.GetNewPassword() {
		return nil, errPasswordSameAsOld
	}
	u, err := s.db.GetUser(ctx, c.UserID)
	if db.IsNoRows(err) {
		return nil, errUserNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get user: %w", err)
	}
	if err := s.policy.check("new_password", u.Username, req.GetNewPassword()); err != nil {
		return nil, err
	}
	// Someone holding a stolen access token may guess the current password
	// here: the session is the source, with the same tight budget as an
	// address at Login.
	attempt, err := s.logins.admitSession(c.SessionID, time.Now())
	if err != nil {
		return nil, err
	}
	match, _, err := s.hasher.check(ctx, req.GetCurrentPassword(), u.PasswordHash)
	if err != nil {
		attempt.refund(ctx, time.Now())
		return nil, err
	}
	if !match {
		return nil, errWrongPassword
	}
	attempt.refund(ctx, time.Now())
	hash, err := s.hasher.hash(ctx, req.GetNewPassword())
	if err != nil {
		return nil, err
	}
	var revoked []string
	err = s.db.Tx(ctx, func(q *db.Queries) error {
		if err := q.SetPasswordHash(ctx, db.SetPasswordHashParams{ID: c.UserID, PasswordHash: hash}); err != nil {
			return fmt.Errorf("set password hash: %w", err)
		}
		var err error
		revoked, err = q.RevokeOtherSessions(ctx, db.RevokeOtherSessionsParams{UserID: c.UserID, ID: c.SessionID, RevokeReason: ptr("password changed")})
		if err != nil {
			return fmt.Errorf("revoke other sessions: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.tokens.sessions.forget(revoked...)
	s.hub.endSessions(c.UserID, revoked...)
	return &parleyv1.ChangePasswordResponse{}, nil
}

func (s *authService) GetUsers(ctx context.Context, req *parleyv1.GetUsersRequest) (*parleyv1.GetUsersResponse, error) {
	rows, err := s.db.GetUsers(ctx, req.GetUserIds())
	if err != nil {
		return nil, fmt.Errorf("get users: %w", err)
	}
	byID := make(map[string]db.User, len(rows))
	for _, r := range rows {
		byID[r.ID] = r
	}
	out := make([]*parleyv1.User, 0, len(rows))
	for _, id := range req.GetUserIds() {
		if u, ok := byID[strings.ToLower(id)]; ok {
			out = append(out, userToProto(u))
			delete(byID, u.ID) // a repeated id is answered once
		}
	}
	return &parleyv1.GetUsersResponse{Users: out}, nil
}

const defaultSearchPageSize = 20

func (s *authService) SearchUsers(ctx context.Context, req *parleyv1.SearchUsersRequest) (*parleyv1.SearchUsersResponse, error) {
	query := strings.ToLower(strings.TrimSpace(req.GetQuery()))
	after, err := parseSearchPageToken(req.GetPageToken(), query)
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = defaultSearchPageSize
	}
	rows, err := s.db.SearchUsers(ctx, db.SearchUsersParams{
		Prefix:  likePrefix(query),
		After:   after,
		MaxRows: int32(size + 1), // one more tells whether another page exists
	})
	if err != nil {
		return nil, fmt.Errorf("search users: %w", err)
	}
	res := &parleyv1.SearchUsersResponse{}
	if len(rows) > size {
		rows = rows[:size]
		res.NextPageToken = searchPageToken(query, rows[size-1].Username)
	}
	res.Users = make([]*parleyv1.User, 0, len(rows))
	for _, r := range rows {
		res.Users = append(res.Users, userToProto(r))
	}
	return res, nil
}

func (s *authService) UpdatePrivacy(ctx context.Context, req *parleyv1.UpdatePrivacyRequest) (*parleyv1.UpdatePrivacyResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	var (
		u     db.User
		entry *parleyv1.SubscribeResponse
	)
	err = s.db.Tx(ctx, func(q *db.Queries) error {
		var err error
		u, err = q.SetMessagePrivacy(ctx, db.SetMessagePrivacyParams{ID: c.UserID, MessagePrivacy: int16(req.GetMessagePrivacy())})
		if db.IsNoRows(err) {
			return errUserNotFound
		}
		if err != nil {
			return fmt.Errorf("set message privacy: %w", err)
		}
		entry, err = appendAccountEntry(ctx, q, c.UserID, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_SettingsChanged{
			SettingsChanged: &parleyv1.SettingsChanged{Setting: &parleyv1.SettingsChanged_Privacy{Privacy: privacyToProto(u)}},
		}})
		return err
	})
	if err != nil {
		return nil, err
	}
	s.hub.publish([]string{c.UserID}, "", entry)
	return &parleyv1.UpdatePrivacyResponse{Privacy: privacyToProto(u)}, nil
}

// issue builds the token pair for a session whose refresh token is refresh.
func (s *authService) issue(session db.Session, refresh string, now time.Time) (*parleyv1.Tokens, error) {
	access, exp, err := s.tokens.issueAccess(session.UserID, session.ID, now)
	if err != nil {
		return nil, err
	}
	return &parleyv1.Tokens{
		SessionId:              session.ID,
		AccessToken:            access,
		AccessTokenExpireTime:  timestamp(exp),
		RefreshToken:           refresh,
		RefreshTokenExpireTime: timestamp(session.RefreshExpiresAt),
	}, nil
}

// clientAddress is the caller's IP address, the key for per-address limits.
func clientAddress(ctx context.Context) string {
	info, ok := connect.CallInfoForHandlerContext(ctx)
	if !ok {
		return ""
	}
	addr := info.Peer().Addr
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// likePrefix turns user text into a LIKE pattern matching it as a prefix:
// '_' is common in usernames and must not act as a wildcard.
func likePrefix(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s) + "%"
}

func ptr[T any](v T) *T { return &v }
