"""A lean HTTP/1.1 client for the hot paths: the validators' peer lanes and the miners' REST calls
(`rawhttp.client`: one kept-alive connection; `rawhttp.pool`: connections to several origins)."""
