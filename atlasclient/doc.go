// Package atlasclient is a Go client for the Atlas API that anyone can
// use without Caddy.
//
// A [TokenSource] obtains and refreshes the access tokens, a [Transport]
// adds them to the requests, and a [Client] calls the API:
//
//	src, err := atlasclient.NewTokenSource(atlasclient.TokenOptions{
//		Endpoint: "https://docstream.dev.kreditmind.com",
//		ClientID: id, ClientSecret: secret,
//	})
//	httpClient := &http.Client{Transport: &atlasclient.Transport{Source: src}}
//	client, err := atlasclient.NewClient("https://docstream.dev.kreditmind.com", httpClient)
//	page, err := client.Extracts(ctx, batchID, 1, 50)
//	for doc, err := range client.Documents(ctx, batchID, 50) { ... }
//
// [TokenOptions].Shared takes a [SharedTokenStore] (Lock, Load, Store)
// through which several sources share one token; the caddy-atlas plugin
// implements it over Caddy's storage.
package atlasclient
