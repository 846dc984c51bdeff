read -r name
echo "hello, ${name:-world}, from bash $BASH_VERSION on $(uname -n) as uid $(id -u)"
