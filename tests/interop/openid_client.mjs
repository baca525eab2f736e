// panva's openid-client as an OpenID Connect relying party of authsvc (tests/test_interop_openid_client.py).
//   node openid_client.mjs start ISSUER CLIENT_ID REDIRECT_URI
//     discovers the server and prints {"url", "verifier", "state", "nonce"}: the authorization
//     URL with PKCE (S256), and what the callback must be checked against
//   node openid_client.mjs finish ISSUER CLIENT_ID CALLBACK_URL VERIFIER STATE NONCE [dpop]
//     exchanges the code (the library checks state, iss, the ID token's signature through the
//     JWKS, iss, aud, exp, nonce), calls userinfo, refreshes, and prints what it saw; with
//     `dpop`, every request carries a DPoP proof (RFC 9449) by a fresh ES256 key
import * as client from "openid-client";

const [mode, issuer, clientId, ...rest] = process.argv.slice(2);
// Plain http is fine for a test server on loopback; the library refuses it unless told.
const options = issuer.startsWith("http://") ? { execute: [client.allowInsecureRequests] } : {};
const config = await client.discovery(new URL(issuer), clientId, undefined, client.None(), options);

if (mode === "start") {
  const [redirectUri] = rest;
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: "openid profile",
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256",
    state,
    nonce,
  });
  console.log(JSON.stringify({ url: url.href, verifier, state, nonce }));
} else if (mode === "finish") {
  const [callback, verifier, state, nonce, dpop] = rest;
  const DPoP = dpop === "dpop" ? client.getDPoPHandle(config, await client.randomDPoPKeyPair("ES256")) : undefined;
  const tokens = await client.authorizationCodeGrant(
    config,
    new URL(callback),
    { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true },
    undefined,
    { DPoP },
  );
  const claims = tokens.claims();
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub, { DPoP });
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP });
  console.log(
    JSON.stringify({
      access_token: refreshed.access_token,
      token_type: tokens.token_type,
      claims,
      userinfo,
      refreshed: {
        token_type: refreshed.token_type,
        rotated: refreshed.refresh_token !== tokens.refresh_token,
        sub: refreshed.claims()?.sub ?? null,
      },
    }),
  );
} else {
  console.error(`unknown mode: ${mode}`);
  process.exit(2);
}
