// The only script of the login page: shows why the last attempt failed.
if (new URLSearchParams(location.search).has('failed')) document.getElementById('failed').hidden = false
