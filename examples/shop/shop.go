package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"

	"github.com/go-sql-driver/mysql"
	sagakit "github.com/saga-orchestrator/saga-orchestrator/kit/go"
)

// order is the saga's payload: the orchestrator sends it as the body of every call.
type order struct {
	OrderID string `json:"order_id"`
	UserID  int64  `json:"user_id"`
	SKU     string `json:"sku"`
	Qty     int64  `json:"qty"`
	Amount  int64  `json:"amount"`
}

// decode reads the payload; a payload that cannot be served is refused (409: nothing was done).
func decode(call *sagakit.Call) (order, error) {
	var o order
	if err := call.Decode(&o); err != nil {
		return o, sagakit.Reject("bad payload: " + err.Error())
	}
	if o.OrderID == "" || o.Qty <= 0 || o.Amount <= 0 {
		return o, sagakit.Reject("bad payload: order_id, qty > 0 and amount > 0 are required")
	}
	return o, nil
}

// A service is one participant: its tables, the rows -seed fills in, its saga endpoints (each
// serving one phase, so a misconfigured saga gets a 400 instead of running the wrong code) and
// what GET /state shows.
type service struct {
	tables []string
	seed   string // INSERT IGNORE of one key=value pair of -seed; "" when -seed is not used
	routes map[string]sagakit.Steps
	state  string // SELECT key, value: the rows GET /state shows
}

var services = map[string]service{
	"order": {
		tables: []string{`CREATE TABLE IF NOT EXISTS orders (
  order_id VARCHAR(64) PRIMARY KEY,
  user_id  BIGINT NOT NULL, sku VARCHAR(64) NOT NULL, qty BIGINT NOT NULL, amount BIGINT NOT NULL,
  status   VARCHAR(16) NOT NULL)`},
		routes: map[string]sagakit.Steps{
			"/orders/create": {Action: createOrder},
			"/orders/cancel": {Compensation: cancelOrder},
		},
		state: "SELECT order_id, status FROM orders ORDER BY order_id",
	},
	"stock": {
		tables: []string{"CREATE TABLE IF NOT EXISTS stock (sku VARCHAR(64) PRIMARY KEY, qty BIGINT NOT NULL)"},
		seed:   "INSERT IGNORE INTO stock (sku, qty) VALUES (?, ?)",
		routes: map[string]sagakit.Steps{
			"/stock/deduct": {Action: take("stock", "sku", "qty", "out of stock", func(o order) (string, int64) { return o.SKU, o.Qty })},
			"/stock/refund": {Compensation: giveBack("stock", "sku", "qty")},
		},
		state: "SELECT sku, qty FROM stock ORDER BY sku",
	},
	"balance": {
		tables: []string{"CREATE TABLE IF NOT EXISTS balances (user_id BIGINT PRIMARY KEY, amount BIGINT NOT NULL)"},
		seed:   "INSERT IGNORE INTO balances (user_id, amount) VALUES (?, ?)",
		routes: map[string]sagakit.Steps{
			"/balance/deduct": {Action: take("balances", "user_id", "amount", "insufficient funds", func(o order) (string, int64) { return strconv.FormatInt(o.UserID, 10), o.Amount })},
			"/balance/refund": {Compensation: giveBack("balances", "user_id", "amount")},
		},
		state: "SELECT user_id, amount FROM balances ORDER BY user_id",
	},
}

// createOrder records the order. It runs in the barrier's transaction: if anything fails, the
// order row and the barrier row roll back together.
func createOrder(ctx context.Context, tx *sql.Tx, call *sagakit.Call) (any, error) {
	o, err := decode(call)
	if err != nil {
		return nil, err
	}
	_, err = tx.ExecContext(ctx, "INSERT INTO orders (order_id, user_id, sku, qty, amount, status) VALUES (?, ?, ?, ?, ?, 'created')",
		o.OrderID, o.UserID, o.SKU, o.Qty, o.Amount)
	var me *mysql.MySQLError
	if errors.As(err, &me) && me.Number == 1062 {
		return nil, sagakit.Reject("order " + o.OrderID + " exists")
	}
	if err != nil {
		return nil, err // 503: the orchestrator retries
	}
	return map[string]any{"order_id": o.OrderID, "status": "created"}, nil
}

// cancelOrder undoes createOrder. It runs only if the create ran here (the barrier answers a
// compensation without its action itself), and it reads the order id from the create's answer
// (call.Origin), so it cancels exactly what was created.
func cancelOrder(ctx context.Context, tx *sql.Tx, call *sagakit.Call) (any, error) {
	var created struct {
		OrderID string `json:"order_id"`
	}
	if err := call.DecodeOrigin(&created); err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, "UPDATE orders SET status = 'cancelled' WHERE order_id = ?", created.OrderID); err != nil {
		return nil, err
	}
	return map[string]any{"order_id": created.OrderID, "status": "cancelled"}, nil
}

// taken is the answer of a deduction, kept by the barrier and handed to its refund as call.Origin.
type taken struct {
	Key   string `json:"key"`
	Taken int64  `json:"taken"`
	Left  int64  `json:"left"`
}

// take deducts pick(order)'s amount from table.value at table.key, or refuses with refusal.
// (table and column names are constants of this file, never input.)
func take(table, key, value, refusal string, pick func(order) (string, int64)) sagakit.Func {
	return func(ctx context.Context, tx *sql.Tx, call *sagakit.Call) (any, error) {
		o, err := decode(call)
		if err != nil {
			return nil, err
		}
		k, n := pick(o)
		var have int64
		err = tx.QueryRowContext(ctx, fmt.Sprintf("SELECT %s FROM %s WHERE %s = ? FOR UPDATE", value, table, key), k).Scan(&have)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return nil, sagakit.Reject(fmt.Sprintf("unknown %s %s", key, k))
		case err != nil:
			return nil, err
		case have < n:
			return nil, sagakit.Reject(refusal)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("UPDATE %s SET %s = %s - ? WHERE %s = ?", table, value, value, key), n, k); err != nil {
			return nil, err
		}
		return taken{Key: k, Taken: n, Left: have - n}, nil
	}
}

// giveBack undoes take: it adds back what the deduction's answer (call.Origin) says it took.
func giveBack(table, key, value string) sagakit.Func {
	return func(ctx context.Context, tx *sql.Tx, call *sagakit.Call) (any, error) {
		var t taken
		if err := call.DecodeOrigin(&t); err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("UPDATE %s SET %s = %s + ? WHERE %s = ?", table, value, value, key), t.Taken, t.Key); err != nil {
			return nil, err
		}
		return map[string]any{"key": t.Key, "refunded": t.Taken}, nil
	}
}
