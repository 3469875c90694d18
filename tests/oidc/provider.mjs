// A real OpenID Connect provider for the console's sign-in tests: the certified oidc-provider
// package, with one confidential client (Warrant's console) and its development login pages,
// where any login name signs in as the account of that name, whose email is NAME@example.com.
//
//   node provider.mjs PORT REDIRECT_URI CLIENT_SECRET
//
// Prints "oidc-provider on ISSUER" once it listens.
import Provider from "oidc-provider";

const [port, redirectUri, clientSecret] = process.argv.slice(2);
if (!port || !redirectUri || !clientSecret) {
  console.error("usage: node provider.mjs PORT REDIRECT_URI CLIENT_SECRET");
  process.exit(64);
}
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: "warrant-console",
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  claims: { openid: ["sub"], email: ["email", "email_verified"] },
  cookies: { keys: ["warrant-test-oidc-cookie-key"] },
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: `${id}@example.com`, email_verified: true };
      },
    };
  },
});
provider.proxy = false;

provider.listen(Number(port), "127.0.0.1", () => {
  console.log(`oidc-provider on ${issuer}`);
});
