// api.ts connects to a Parley server: one Connect transport that carries the
// signed-in user's access token, and a client per service.

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";

import { AuthService, Platform } from "../../gen/es/parley/v1/auth_pb.js";
import { CallsService } from "../../gen/es/parley/v1/calls_pb.js";
import { ContactsService } from "../../gen/es/parley/v1/contacts_pb.js";
import { MessagesService } from "../../gen/es/parley/v1/messages_pb.js";
import type { Tokens } from "../../gen/es/parley/v1/auth_pb.js";
import type { User } from "../../gen/es/parley/v1/user_pb.js";

/** publicMethods are the AuthService calls made without an access token. */
const publicMethods = new Set(["Register", "Login", "Refresh"]);

/** Api holds the clients of one server and the session they act in. */
export class Api {
  readonly auth: Client<typeof AuthService>;
  readonly calls: Client<typeof CallsService>;
  readonly contacts: Client<typeof ContactsService>;
  readonly messages: Client<typeof MessagesService>;
  /** user is the signed-in user, once login succeeded. */
  user: User | undefined;
  private accessToken = "";
  private refreshToken = "";
  /** renewAt is when (ms since the epoch) the access token is renewed, before it expires. */
  private renewAt = 0;
  /** renewing is the Refresh in flight: a refresh token is good for one exchange only. */
  private renewing: Promise<void> | undefined;

  /**
   * @param baseUrl the server's URL, such as "https://chat.example.com"
   * @param fetchImpl the fetch to use (the page's, or Node's in a test)
   */
  constructor(baseUrl: string, fetchImpl: typeof globalThis.fetch = globalThis.fetch.bind(globalThis)) {
    const bearer: Interceptor = (next) => async (req) => {
      const isPublic = req.service.typeName === AuthService.typeName && publicMethods.has(req.method.name);
      if (!isPublic && this.refreshToken !== "" && Date.now() >= this.renewAt) {
        await this.renew();
      }
      if (!isPublic && this.accessToken !== "") {
        req.header.set("Authorization", `Bearer ${this.accessToken}`);
      }
      return next(req);
    };
    const transport = createConnectTransport({ baseUrl, interceptors: [bearer], fetch: fetchImpl });
    this.auth = createClient(AuthService, transport);
    this.calls = createClient(CallsService, transport);
    this.contacts = createClient(ContactsService, transport);
    this.messages = createClient(MessagesService, transport);
  }

  /** login signs in; with register it first creates the account when it does not exist. */
  async login(username: string, password: string, opts: { register?: boolean; deviceName?: string } = {}): Promise<User> {
    if (opts.register) {
      try {
        await this.auth.register({ username, password, displayName: username });
      } catch (err) {
        if (ConnectError.from(err).code !== Code.AlreadyExists) {
          throw err;
        }
      }
    }
    const res = await this.auth.login({ username, password, deviceName: opts.deviceName ?? "web", platform: Platform.WEB });
    if (res.user === undefined || res.tokens === undefined) {
      throw new Error("login answered without a user or tokens");
    }
    this.setTokens(res.tokens);
    this.user = res.user;
    return res.user;
  }

  /**
   * renew exchanges the refresh token for a new pair. Calls that find the
   * access token due share one exchange: a second use of the same refresh
   * token would revoke the session.
   */
  private renew(): Promise<void> {
    this.renewing ??= (async () => {
      try {
        const res = await this.auth.refresh({ refreshToken: this.refreshToken });
        if (res.tokens === undefined) {
          throw new Error("refresh answered without tokens");
        }
        this.setTokens(res.tokens);
      } finally {
        this.renewing = undefined;
      }
    })();
    return this.renewing;
  }

  /** setTokens keeps a new pair and schedules its renewal a third of its life (at most 30 s) before it expires. */
  private setTokens(tokens: Tokens): void {
    this.accessToken = tokens.accessToken;
    this.refreshToken = tokens.refreshToken;
    const expires = tokens.accessTokenExpireTime;
    if (expires === undefined) {
      this.renewAt = Number.POSITIVE_INFINITY;
      return;
    }
    const expiresMs = Number(expires.seconds) * 1000 + Math.floor(expires.nanos / 1e6);
    const lifeMs = expiresMs - Date.now();
    this.renewAt = expiresMs - Math.min(30_000, Math.max(lifeMs, 0) / 3);
  }
}
