from layerchain.cli import app

app()
