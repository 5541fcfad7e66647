// Starts ReDoc on /redoc (a file of its own for the page's script-src 'self').
window.addEventListener('DOMContentLoaded', () => {
  Redoc.init('/openapi.json', { hideDownloadButton: false }, document.getElementById('redoc'));
});
