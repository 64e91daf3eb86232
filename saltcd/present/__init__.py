"""What a person or a chat sees: the outputter's views, `deploy.watch`'s
loop, the HTML report, and outgoing notifications with their sent marks."""
