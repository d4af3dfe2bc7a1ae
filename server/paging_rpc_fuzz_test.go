package server_test

import (
	"context"
	"encoding/base64"
	"testing"
	"unicode/utf8"

	"connectrpc.com/connect"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// pagedList is one RPC that pages with page_token: it lists one page from
// token and returns the next page's token.
type pagedList struct {
	name string
	page func(ctx context.Context, token string) (next string, err error)
}

// FuzzListPageTokens sends arbitrary page tokens, as given and as the
// base64url of arbitrary bytes, to every RPC that takes a page_token, over
// real HTTP to a server on PostgreSQL. It holds if each answers a page or
// InvalidArgument, never Internal, and if the next_page_token of every page
// it answers lists the next page. Following next_page_token from the first
// page reads each list to its end.
func FuzzListPageTokens(f *testing.F) {
	ge := groupEnvOn(newEnv(f, rpcLoose))
	a, b := ge.signUp("paging_a"), ge.signUp("paging_b")
	ge.signUp("paging_c")
	c := ge.contacts()
	for _, name := range []string{"paging_d", "paging_e"} {
		if _, err := c.SendFriendRequest(a.ctx(), &parleyv1.SendFriendRequestRequest{UserId: ge.register(name, name).GetId()}); err != nil {
			f.Fatal(err)
		}
	}
	for _, name := range []string{"paging_f", "paging_g"} {
		if _, err := c.BlockUser(a.ctx(), &parleyv1.BlockUserRequest{UserId: ge.register(name, name).GetId()}); err != nil {
			f.Fatal(err)
		}
	}
	group := ge.create(f, a, "paging", b)
	ge.create(f, a, "paging 2", b)
	for range 2 {
		if _, err := ge.g.CreateInviteLink(a.ctx(), &parleyv1.CreateInviteLinkRequest{GroupId: group.GetId()}); err != nil {
			f.Fatal(err)
		}
	}
	ctx, calls, msgs := a.ctx(), ge.calls(), ge.msgs()
	lists := []pagedList{
		{"ListFriendRequests", func(ctx context.Context, token string) (string, error) {
			res, err := c.ListFriendRequests(ctx, &parleyv1.ListFriendRequestsRequest{
				Direction: parleyv1.FriendRequestDirection_FRIEND_REQUEST_DIRECTION_OUTGOING, PageSize: 1, PageToken: token,
			})
			return res.GetNextPageToken(), err
		}},
		{"ListContacts", func(ctx context.Context, token string) (string, error) {
			res, err := c.ListContacts(ctx, &parleyv1.ListContactsRequest{PageSize: 1, PageToken: token})
			return res.GetNextPageToken(), err
		}},
		{"ListBlocked", func(ctx context.Context, token string) (string, error) {
			res, err := c.ListBlocked(ctx, &parleyv1.ListBlockedRequest{PageSize: 1, PageToken: token})
			return res.GetNextPageToken(), err
		}},
		{"ListCalls", func(ctx context.Context, token string) (string, error) {
			res, err := calls.ListCalls(ctx, &parleyv1.ListCallsRequest{PageSize: 1, PageToken: token})
			return res.GetNextPageToken(), err
		}},
		{"ListGroups", func(ctx context.Context, token string) (string, error) {
			res, err := ge.g.ListGroups(ctx, &parleyv1.ListGroupsRequest{PageSize: 1, PageToken: token})
			return res.GetNextPageToken(), err
		}},
		{"ListMembers", func(ctx context.Context, token string) (string, error) {
			res, err := ge.g.ListMembers(ctx, &parleyv1.ListMembersRequest{GroupId: group.GetId(), PageSize: 1, PageToken: token})
			return res.GetNextPageToken(), err
		}},
		{"ListInviteLinks", func(ctx context.Context, token string) (string, error) {
			res, err := ge.g.ListInviteLinks(ctx, &parleyv1.ListInviteLinksRequest{GroupId: group.GetId(), PageSize: 1, PageToken: token})
			return res.GetNextPageToken(), err
		}},
		{"ListConversations", func(ctx context.Context, token string) (string, error) {
			res, err := msgs.ListConversations(ctx, &parleyv1.ListConversationsRequest{PageSize: 1, PageToken: token})
			return res.GetNextPageToken(), err
		}},
		{"SearchUsers", func(ctx context.Context, token string) (string, error) {
			res, err := ge.auth().SearchUsers(ctx, &parleyv1.SearchUsersRequest{Query: "paging", PageSize: 1, PageToken: token})
			return res.GetNextPageToken(), err
		}},
	}
	// The seeds are the real tokens of every page of every list.
	for _, l := range lists {
		token, pages := "", 0
		for {
			next, err := l.page(ctx, token)
			if err != nil {
				f.Fatalf("%s, page %d (token %q): %v", l.name, pages+1, token, err)
			}
			pages++
			if next == "" {
				break
			}
			payload, err := base64.RawURLEncoding.DecodeString(next)
			if err != nil {
				payload = []byte(next) // an offset
			}
			f.Add(next, payload)
			token = next
		}
		if pages < 2 && l.name != "ListCalls" {
			f.Fatalf("%s has %d page: the seeds hold no token of it", l.name, pages)
		}
	}
	f.Fuzz(func(t *testing.T, token string, payload []byte) {
		for _, tok := range []string{token, base64.RawURLEncoding.EncodeToString(payload)} {
			if !utf8.ValidString(tok) {
				continue // the client cannot encode it; a proto string is UTF-8
			}
			for _, l := range lists {
				next, err := l.page(ctx, tok)
				if code := connect.CodeOf(err); err != nil && code != connect.CodeInvalidArgument {
					t.Fatalf("%s with page_token %q: got code %v (%v), want a page or %v", l.name, tok, code, err, connect.CodeInvalidArgument)
				}
				if err != nil || next == "" {
					continue
				}
				if _, err := l.page(ctx, next); err != nil {
					t.Fatalf("%s with page_token %q answers next_page_token %q, which is refused: %v", l.name, tok, next, err)
				}
			}
		}
	})
}
