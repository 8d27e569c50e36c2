// Command shopctl drives the shop example's sagas through the Go client of saga-orchestrator
// (kit/go/client), by definition:
//
//	shopctl [-orchestrator URL] define -order URL -stock URL -balance URL [-refund-delay-ms N]
//	shopctl [-orchestrator URL] start -id ID -user N -sku SKU -qty N -amount N [-version N] [-wait D]
//
// define stores the definition "place_order" (PUT /v1/definitions/place_order): its three
// steps on the three services, each body made of $payload references to the order's fields.
// It prints {"name", "version", "created"}: created is false when the definition was already
// stored as it is (no new version). start starts a saga of it by definition, with the id and
// the order as payload (the newest version, or -version), waits up to -wait for the end, and
// prints the saga as the orchestrator answered it. The token, if the orchestrator asks for
// one, comes from $SAGA_TOKEN. See ../../README.md and ../../run.sh.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/saga-orchestrator/saga-orchestrator/kit/go/client"
)

// definitionName is the name the shop's sagas are defined and started by.
const definitionName = "place_order"

func main() {
	global := flag.NewFlagSet("shopctl", flag.ExitOnError)
	orchestrator := global.String("orchestrator", "http://127.0.0.1:8080", "base URL of saga-orchestrator")
	global.Usage = func() {
		fmt.Fprintf(global.Output(), "usage: shopctl [-orchestrator URL] define|start [flags]\n")
		global.PrintDefaults()
	}
	_ = global.Parse(os.Args[1:])
	if global.NArg() == 0 {
		global.Usage()
		os.Exit(2)
	}
	opts := []client.Option{}
	if tok := os.Getenv("SAGA_TOKEN"); tok != "" {
		opts = append(opts, client.WithToken(tok))
	}
	c, err := client.New(*orchestrator, opts...)
	if err != nil {
		fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	switch cmd, args := global.Arg(0), global.Args()[1:]; cmd {
	case "define":
		err = define(ctx, c, args)
	case "start":
		err = start(ctx, c, args)
	default:
		err = fmt.Errorf("unknown command %q (define or start)", cmd)
	}
	if err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "shopctl: %v\n", err)
	os.Exit(1)
}

// ref is a payload reference: the start's payload value at pointer.
func ref(pointer string) client.PayloadRef { return client.PayloadRef(pointer) }

// document is the shop's saga: create the order, take the stock, charge the buyer. Each action
// gets the order (the services check all of its fields), each compensation only the order id:
// an undo reads what its action did from the barrier (sagakit's Call.DecodeOrigin).
func document(order, stock, balance string, refundDelayMs int64) client.Document {
	theOrder := map[string]any{
		"order_id": ref("/order_id"), "user_id": ref("/user_id"), "sku": ref("/sku"),
		"qty": ref("/qty"), "amount": ref("/amount"),
	}
	justID := map[string]any{"order_id": ref("/order_id")}
	step := func(name, base, action, undo string) client.Step {
		return client.Step{Name: name,
			Action:       &client.Endpoint{URL: base + action, Body: theOrder},
			Compensation: &client.Endpoint{URL: base + undo, Body: justID}}
	}
	steps := []client.Step{
		step("create_order", order, "/orders/create", "/orders/cancel"),
		step("deduct_stock", stock, "/stock/deduct", "/stock/refund"),
		step("deduct_balance", balance, "/balance/deduct", "/balance/refund"),
	}
	description := "a shop order: create it, take the stock, charge the buyer"
	if refundDelayMs > 0 {
		steps[1].Compensation.DelayMs = refundDelayMs
		description += fmt.Sprintf("; a stock refund waits %d ms", refundDelayMs)
	}
	return client.Document{Description: description, TimeoutMs: 60000, Steps: steps}
}

func define(ctx context.Context, c *client.Client, args []string) error {
	fs := flag.NewFlagSet("define", flag.ExitOnError)
	order := fs.String("order", "", "base URL of the order service")
	stock := fs.String("stock", "", "base URL of the stock service")
	balance := fs.String("balance", "", "base URL of the balance service")
	delay := fs.Int64("refund-delay-ms", 0, "delay_ms of the stock refund (0: none)")
	_ = fs.Parse(args)
	if *order == "" || *stock == "" || *balance == "" || fs.NArg() > 0 {
		return errors.New("define needs -order, -stock and -balance (and takes no arguments)")
	}
	trim := func(s string) string { return strings.TrimRight(s, "/") }
	d, created, err := c.PutDefinition(ctx, definitionName, document(trim(*order), trim(*stock), trim(*balance), *delay))
	if err != nil {
		return err
	}
	return printJSON(map[string]any{"name": d.Name, "version": d.Version, "created": created})
}

func start(ctx context.Context, c *client.Client, args []string) error {
	fs := flag.NewFlagSet("start", flag.ExitOnError)
	id := fs.String("id", "", "saga id (also the order id)")
	user := fs.Int64("user", 0, "user id of the buyer")
	sku := fs.String("sku", "A1", "the article")
	qty := fs.Int64("qty", 1, "how many")
	amount := fs.Int64("amount", 0, "the price")
	version := fs.Int("version", 0, "the definition's version (0: the newest that is not retired)")
	wait := fs.Duration("wait", 0, "wait up to this long for the saga to end (0: answer at once)")
	_ = fs.Parse(args)
	if *id == "" || fs.NArg() > 0 {
		return errors.New("start needs -id (and takes no arguments)")
	}
	payload := map[string]any{"order_id": *id, "user_id": *user, "sku": *sku, "qty": *qty, "amount": *amount}
	saga, _, err := c.Start(ctx, client.StartRequest{
		Definition: definitionName, Version: *version, ID: *id, Payload: payload,
	}, client.StartOptions{Wait: *wait})
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append(saga.Raw, '\n'))
	return err
}

func printJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append(b, '\n'))
	return err
}
