mod backup;
mod cli;
mod restore;
mod seed;
mod sim;
mod storage;
mod support;
