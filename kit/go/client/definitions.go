package client

import (
	"context"
	"net/http"
	"strconv"
)

// PutDefinition stores doc as the next version of definition name (PUT
// /v1/definitions/{name}; needs the admin scope). doc is a Document, or any value that encodes
// to a definition's JSON object (a map, a json.RawMessage). The service checks it as it checks
// a start: every mistake is in the 400 *Problem's Errors, with its pointer into doc. It
// returns the version and whether it is new: true for 201 Created, false for 200 when doc is
// identical to the latest version (no new version is made, so a deploy can put its
// definitions at every start).
func (c *Client) PutDefinition(ctx context.Context, name string, doc any) (*Definition, bool, error) {
	d := &Definition{}
	r, err := c.call(ctx, http.MethodPut, c.endpoint(nil, "v1", "definitions", name), doc, d,
		http.StatusCreated, http.StatusOK)
	if err != nil {
		return nil, false, err
	}
	return d, r.status == http.StatusCreated, nil
}

// GetDefinition reads the newest version of definition name, with the list of every version
// (Definition.Versions) (GET /v1/definitions/{name}). An unknown name is a 404 *Problem.
func (c *Client) GetDefinition(ctx context.Context, name string) (*Definition, error) {
	d := &Definition{}
	if _, err := c.call(ctx, http.MethodGet, c.endpoint(nil, "v1", "definitions", name), nil, d, http.StatusOK); err != nil {
		return nil, err
	}
	return d, nil
}

// GetDefinitionVersion reads one version of definition name (GET
// /v1/definitions/{name}/versions/{version}). An unknown one is a 404 *Problem.
func (c *Client) GetDefinitionVersion(ctx context.Context, name string, version int) (*Definition, error) {
	d := &Definition{}
	target := c.endpoint(nil, "v1", "definitions", name, "versions", strconv.Itoa(version))
	if _, err := c.call(ctx, http.MethodGet, target, nil, d, http.StatusOK); err != nil {
		return nil, err
	}
	return d, nil
}

// ListDefinitions lists every definition, by name (GET /v1/definitions).
func (c *Client) ListDefinitions(ctx context.Context) ([]DefinitionSummary, error) {
	var out struct {
		Items []DefinitionSummary `json:"items"`
	}
	if _, err := c.call(ctx, http.MethodGet, c.endpoint(nil, "v1", "definitions"), nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	return out.Items, nil
}

// RetireDefinition retires a version of definition name (POST
// /v1/definitions/{name}/versions/{version}/retire; needs the admin scope): it takes no new
// start (a start of it is a 409 *Problem, IsDefinitionRetired), and sagas running it are not
// touched. reason ("" for none) is kept with the retirement. Retiring a version again changes
// nothing. It returns the version.
func (c *Client) RetireDefinition(ctx context.Context, name string, version int, reason string) (*Definition, error) {
	d := &Definition{}
	target := c.endpoint(nil, "v1", "definitions", name, "versions", strconv.Itoa(version), "retire")
	if _, err := c.call(ctx, http.MethodPost, target, reasonBody(reason), d, http.StatusOK); err != nil {
		return nil, err
	}
	return d, nil
}
